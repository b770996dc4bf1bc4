// W6 backlog: N events committed with no worker running (one INSERT … SELECT generate_series
// per 10,000 rows, through each system's trigger), then the workers start and drain them.
// events/s per 10 % slice, overall, and the peak resident memory of the worker processes
// (VmRSS summed over the process and its children, sampled every 250 ms).
import type { BenchContext } from '../context.ts';
import { checkSink, sql, waitForSink } from '../db.ts';
import { nowMs, postgresPids, sampleTrees, statusMb } from '../measure.ts';
import { serverEvents } from '../serverLog.ts';
import type { BenchSystem, RunningSystem } from '../systems/system.ts';

export interface DrainResult {
  events: number;
  /** Seconds to create the backlog. */
  backlogSec: number;
  /** events/s from the first to the last sink row, and from the worker's start. */
  rate: number;
  rateFromStart: number;
  startupMs: number;
  /** events/s of each 10 % of the backlog. */
  slices: number[];
  peakRssMb: number;
  /** The main process's own high-water mark (VmHWM). */
  mainHwmMb: number;
  lost: number;
  duplicates: number;
  complete: boolean;
  cpu: Record<string, number>;
  otherCores: number;
  /** Checkpoints and autovacuum runs the server logged during the drain, seconds after the workers' start. */
  serverEvents: { atSec: number; text: string }[];
}

/**
 * 10,000 rows per statement: one INSERT … SELECT of 100,000 rows through graphile-worker's
 * add_job trigger ran for more than 13 minutes, CPU-bound (cost grows faster than the row count).
 */
export async function createBacklog(url: string, events: number): Promise<number> {
  const t0 = Date.now();
  const chunk = 10_000;
  for (let from = 1; from <= events; from += chunk) {
    const to = Math.min(events, from + chunk - 1);
    await sql(url, `INSERT INTO src (k, payload) SELECT g % 1000, 'payload' FROM generate_series($1::int, $2::int) g`, [
      from,
      to,
    ]);
  }
  return (Date.now() - t0) / 1000;
}

export async function drain(
  ctx: BenchContext,
  system: BenchSystem,
  events: number,
  options: {
    nodeArgs?: string[];
    env?: Record<string, string>;
    beforeStart?: (url: string) => Promise<void>;
    /** Called once the workers run, and once every event arrived (before they stop). */
    onRunning?: (running: RunningSystem) => void;
    onDrained?: (running: RunningSystem) => void;
    /** After the measurements, before the workers stop (e.g. wait for a profile to be written). */
    beforeStop?: (running: RunningSystem) => Promise<void>;
  } = {},
): Promise<DrainResult & { url: string }> {
  const url = await ctx.freshDb(`w6_${system.name}`);
  await system.install(url);
  ctx.log(`W6: ${system.name} creating a backlog of ${events} events`);
  const backlogSec = await createBacklog(url, events);
  await sql(url, 'CHECKPOINT');
  await options.beforeStart?.(url);
  ctx.log(`W6: ${system.name} backlog ready in ${backlogSec.toFixed(0)} s; draining`);
  const marks: number[] = [];
  let running: RunningSystem | undefined;
  const t0 = nowMs();
  let mainHwmMb = 0;
  let firstSinkAt = 0;
  try {
    running = await system.start(url, {
      concurrency: ctx.options.sizes.concurrency,
      nodeArgs: options.nodeArgs,
      env: options.env,
    });
    const r = running;
    options.onRunning?.(r);
    const meter = ctx.meter();
    const sampler = sampleTrees({
      rssOf: () => r.pids(),
      cpuOf: { [system.name]: () => r.pids(), postgres: () => postgresPids(ctx.pg.dataDir) },
    });
    let next = 1;
    let lastLog = Date.now();
    const complete = await waitForSink(url, events, {
      timeoutMs: Math.max(600_000, events * 10),
      intervalMs: 250,
      onProgress: (n, at) => {
        if (n > 0 && !firstSinkAt) firstSinkAt = at;
        while (next <= 10 && n >= (events * next) / 10) {
          marks.push(at);
          next++;
        }
        if (Date.now() - lastLog > 30_000) {
          lastLog = Date.now();
          ctx.log(`W6: ${system.name} ${n}/${events} (${((n / events) * 100).toFixed(0)} %)`);
        }
      },
    });
    options.onDrained?.(r);
    const cpu = sampler.cpu();
    sampler.stop();
    const { otherCores } = meter.stop();
    const logged = serverEvents(ctx.pg.logFile, t0, nowMs()).map((e) => ({
      atSec: Math.round(e.atMs - t0) / 1000,
      text: e.text,
    }));
    mainHwmMb = Math.max(...r.pids().map((p) => statusMb(p, 'VmHWM')), 0);
    const peakRssMb = sampler.peakRssMb();
    await options.beforeStop?.(r);
    await running.stop();
    running = undefined;
    const check = await checkSink(url);
    const slices = marks.map((at, i) => events / 10 / ((at - (i === 0 ? firstSinkAt : marks[i - 1]!)) / 1000));
    return {
      url,
      events,
      backlogSec,
      rate: check.distinct / ((check.lastSinkMs - check.firstSinkMs) / 1000),
      rateFromStart: check.distinct / ((check.lastSinkMs - t0) / 1000),
      startupMs: check.firstSinkMs - t0,
      slices,
      peakRssMb,
      mainHwmMb,
      lost: events - check.distinct,
      duplicates: check.rows - check.distinct,
      complete,
      cpu,
      otherCores,
      serverEvents: logged,
    };
  } finally {
    await running?.stop();
  }
}

function sliceText(slices: number[]): string {
  return slices.map((s) => Math.round(s)).join(' / ');
}

export async function runW6(ctx: BenchContext): Promise<void> {
  const { w6Events, w6PeerEvents } = ctx.options.sizes;
  const results: Record<string, DrainResult> = {};
  for (const system of ctx.systems) {
    const events = system.name === 'rppd' ? w6Events : w6PeerEvents;
    const { url, ...r } = await drain(ctx, system, events);
    await ctx.dropDb(url);
    results[system.name] = r;
    ctx.data[`W6 ${system.name}`] = r;
    for (const e of r.serverEvents) ctx.log(`  server: ${e.atSec.toFixed(1)}s ${e.text}`);
    const caseName = `${events.toLocaleString('en-US')}-event backlog`;
    const exact = r.complete && r.lost === 0 && r.duplicates === 0;
    const cpu = Object.entries(r.cpu)
      .map(([k, v]) => `${k} ${v.toFixed(0)} s`)
      .join(', ');
    ctx.record({
      workload: 'W6',
      case: caseName,
      system: system.name,
      metric: 'drain events/s',
      value: r.rate,
      unit: 'ev/s',
      otherCores: r.otherCores,
      note:
        `${exact ? 'exact' : `NOT EXACT (${r.lost} lost, ${r.duplicates} dup)`}; ` +
        `${Math.round(r.rateFromStart)}/s counting ${(r.startupMs / 1000).toFixed(1)} s start-up; ` +
        `backlog made in ${r.backlogSec.toFixed(0)} s; cpu ${cpu}; per 10 %: ${sliceText(r.slices)}`,
    });
    const first = r.slices[0] ?? Number.NaN;
    const last = r.slices[r.slices.length - 1] ?? Number.NaN;
    ctx.record({
      workload: 'W6',
      case: caseName,
      system: system.name,
      metric: 'last 10 % vs first 10 %',
      value: last / first,
      unit: '×',
      target: system.name === 'rppd' ? { text: '≥ 0.9 (no slowdown)', pass: last / first >= 0.9 } : undefined,
    });
    ctx.record({
      workload: 'W6',
      case: caseName,
      system: system.name,
      metric: 'peak RSS (process tree)',
      value: r.peakRssMb,
      unit: 'MiB',
      target: system.name === 'rppd' ? { text: '≤ 250 MiB', pass: r.peakRssMb <= 250 } : undefined,
      note: `main process VmHWM ${r.mainHwmMb.toFixed(0)} MiB`,
    });
  }
  const peers = ['graphile-worker', 'pg-boss'].filter((p) => results[p]);
  const best = Math.max(...peers.map((p) => results[p]!.rate));
  const rppd = results.rppd;
  if (rppd && peers.length) {
    const ratio = rppd.rate / best;
    ctx.record({
      workload: 'W6',
      case: 'drain rate',
      system: 'rppd',
      metric: 'ratio to the faster peer',
      value: ratio,
      unit: '×',
      target: { text: '≥ 1.3', pass: ratio >= 1.3 },
      note: `rppd's backlog is ${w6Events / w6PeerEvents}× the peers'`,
    });
  }
}

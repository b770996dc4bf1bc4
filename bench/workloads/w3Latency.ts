// W3 latency: rows inserted at a steady rate (about half of the system's W2 rate) from a pool
// of connections; the commit time is taken right after each INSERT returns (autocommit), the
// start inside the handler (performance.timeOrigin + now()) and the end as the sink row's
// clock_timestamp(). All clocks are this machine's realtime clock.
import pg from 'pg';
import type { BenchContext } from '../context.ts';
import { sql, waitForSink } from '../db.ts';
import { median, nowMs, sleep, summarize } from '../measure.ts';
import { type MasterProcess, masterBetween, type WalWrites, walWritesBetween } from '../nodeMetrics.ts';
import { serverEvents } from '../serverLog.ts';
import type { BenchSystem, InstallOptions, RunningSystem } from '../systems/system.ts';

const CONNECTIONS = 8;
/** The line of rppd with src captured from the WAL instead of by the trigger. */
const WAL = 'rppd (WAL capture)';

interface Latencies {
  rate: number;
  achievedRate: number;
  start: ReturnType<typeof summarize>;
  end: ReturnType<typeof summarize>;
  missing: number;
  otherCores: number;
  /** The slowest starts: seconds after the first measured commit, ms, the source row and its commit time (epoch ms). */
  slowest: { atSec: number; startMs: number; id: string; committedAt: number }[];
  /**
   * Per second of the round (by commit time, from the first measured commit): commit→start
   * (samples, p50, max) and how long the writers' INSERTs took (insertP50, insertMax: the
   * server's commit, fsync included), so that a slow second of the server shows next to one of the system.
   */
  timeline: { sec: number; n: number; p50: number; max: number; insertP50: number; insertMax: number }[];
  /** Checkpoints and autovacuum runs the server logged during the round, seconds as in `timeline`. */
  serverEvents: { atSec: number; text: string }[];
  /** rppd with WAL capture: the master's writes to the queue during the round (its /metrics). */
  walWrites?: WalWrites | null;
  /** rppd: the master process during the round (its /metrics): CPU, event-loop delay, GC pauses. */
  master?: MasterProcess | null;
}

/**
 * Single-row INSERTs into src at `rate` from CONNECTIONS connections for warm-up + measured
 * seconds: when each measured INSERT returned (by event id) and how long it took (epoch ms).
 */
export async function steadyInserts(url: string, rate: number, seconds: number, warmUp: number) {
  const clients = await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      const c = new pg.Client({ connectionString: url, application_name: 'rppd bench inserter' });
      await c.connect();
      return c;
    }),
  );
  const free = [...clients];
  const waiting: ((c: pg.Client) => void)[] = [];
  const take = () => new Promise<pg.Client>((resolve) => (free.length ? resolve(free.pop()!) : waiting.push(resolve)));
  const give = (c: pg.Client) => (waiting.length ? waiting.shift()!(c) : free.push(c));
  const committed = new Map<string, number>();
  /** Measured INSERTs: when each returned and how long it took (epoch ms, ms). */
  const writes: { at: number; took: number }[] = [];
  const total = Math.round(rate * (seconds + warmUp));
  const measuredFrom = Math.round(rate * warmUp);
  const inflight: Promise<void>[] = [];
  const t0 = nowMs();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - nowMs();
    if (wait > 1) await sleep(wait);
    const c = await take();
    const sent = nowMs();
    const p = c
      .query<{ id: string }>(`INSERT INTO src (k, payload) VALUES ($1, 'payload') RETURNING id`, [i % 1000])
      .then((res) => {
        const at = nowMs();
        if (i < measuredFrom) return;
        committed.set(res.rows[0]!.id, at);
        writes.push({ at, took: at - sent });
      })
      .finally(() => give(c));
    inflight.push(p);
    if (inflight.length > 1000) await Promise.all(inflight.splice(0, 500));
  }
  await Promise.all(inflight);
  const achievedRate = total / ((nowMs() - t0) / 1000);
  await Promise.all(clients.map((c) => c.end()));
  return { committed, writes, total, achievedRate };
}

async function measure(
  ctx: BenchContext,
  system: BenchSystem,
  rate: number,
  install?: InstallOptions,
): Promise<Latencies> {
  const { w3Seconds, w3WarmUpSeconds, concurrency } = ctx.options.sizes;
  const url = await ctx.freshDb(`w3_${system.name}${install?.capture === 'wal' ? '_wal' : ''}`);
  await system.install(url, install);
  let running: RunningSystem | undefined;
  try {
    running = await system.start(url, { concurrency });
    // Start from an idle system (rppd: writers notify the idle master).
    await sleep(2500);
    ctx.log(`W3: ${system.name} at ${Math.round(rate)} rows/s for ${w3Seconds + w3WarmUpSeconds} s`);
    const meter = ctx.meter();
    const windowStart = nowMs();
    const metricsBefore = (await running.metrics?.().catch(() => '')) ?? '';
    const { committed, writes, total, achievedRate } = await steadyInserts(url, rate, w3Seconds, w3WarmUpSeconds);
    await waitForSink(url, total, { timeoutMs: 120_000 });
    // The sink row with the highest id can commit before lower ones of runs still in flight:
    // wait for every source row, so that "missing" counts only rows that never ran.
    for (let i = 0; i < 100; i++) {
      const [r] = await sql(url, 'SELECT count(DISTINCT src_id)::int AS n FROM sink');
      if (Number(r?.n) >= total) break;
      await sleep(100);
    }
    const { otherCores } = meter.stop();
    const windowEnd = nowMs();
    const metricsAfter = await running.metrics?.().catch(() => '');
    const walWrites = metricsAfter ? walWritesBetween(metricsBefore, metricsAfter) : undefined;
    const master = metricsAfter ? masterBetween(metricsBefore, metricsAfter) : undefined;
    const rows = await sql(
      url,
      'SELECT src_id::text AS id, started_ms, extract(epoch FROM finished_at) * 1000 AS finished_ms FROM sink',
    );
    const start: number[] = [];
    const end: number[] = [];
    const firstCommit = Math.min(...committed.values());
    const byStart: Latencies['slowest'] = [];
    for (const row of rows) {
      const c = committed.get(String(row.id));
      if (c === undefined) continue;
      const startMs = Number(row.started_ms) - c;
      start.push(startMs);
      end.push(Number(row.finished_ms) - c);
      byStart.push({ atSec: (c - firstCommit) / 1000, startMs, id: String(row.id), committedAt: Math.round(c) });
    }
    const timeline = perSecond(
      byStart,
      writes.map((w) => ({ atSec: (w.at - firstCommit) / 1000, ms: w.took })),
    );
    const events = serverEvents(ctx.pg.logFile, windowStart, windowEnd).map((e) => ({
      atSec: Math.round(e.atMs - firstCommit) / 1000,
      text: e.text,
    }));
    const slowest = byStart.sort((a, b) => b.startMs - a.startMs).slice(0, 10);
    const l: Latencies = {
      rate,
      achievedRate,
      start: summarize(start),
      end: summarize(end),
      missing: committed.size - start.length,
      otherCores,
      slowest,
      timeline,
      serverEvents: events,
      ...(walWrites ? { walWrites } : {}),
      ...(master ? { master } : {}),
    };
    logRound(ctx, l);
    return l;
  } finally {
    await running?.stop();
    await ctx.dropDb(url);
  }
}

/** Samples by whole second of `atSec`. */
function bySecond(samples: { atSec: number; ms: number }[]): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const { atSec, ms } of samples) {
    const sec = Math.floor(atSec);
    const list = out.get(sec) ?? [];
    list.push(ms);
    out.set(sec, list);
  }
  return out;
}

function perSecond(starts: Latencies['slowest'], writes: { atSec: number; ms: number }[]): Latencies['timeline'] {
  const writesBySec = bySecond(writes);
  const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
  return [...bySecond(starts.map((s) => ({ atSec: s.atSec, ms: s.startMs }))).entries()]
    .sort(([a], [b]) => a - b)
    .map(([sec, list]) => {
      const s = summarize(list);
      const w = summarize(writesBySec.get(sec) ?? []);
      return {
        sec,
        n: s.n,
        p50: round(s.p50, 2),
        max: round(s.max, 1),
        insertP50: round(w.p50, 2),
        insertMax: round(w.max, 1),
      };
    });
}

/** The round's seconds whose slowest start passed 25 ms, and what the server logged meanwhile. */
function logRound(ctx: BenchContext, l: Latencies): void {
  const slow = l.timeline
    .filter((t) => t.max > 25)
    .map((t) => `${t.sec}s: p50 ${t.p50} max ${t.max} (INSERT p50 ${t.insertP50} max ${t.insertMax})`);
  const events = l.serverEvents.map((e) => `${e.atSec.toFixed(1)}s ${e.text}`);
  ctx.log(
    `  p50 ${l.start.p50.toFixed(2)} p99 ${l.start.p99.toFixed(2)} ms; seconds over 25 ms: ${slow.join(', ') || 'none'}`,
  );
  for (const e of events) ctx.log(`  server: ${e}`);
  const m = l.master;
  if (m) {
    ctx.log(
      `  master: CPU ${m.cpuSec.toFixed(1)} s, longest event-loop delay ${m.loopDelayMaxMs.toFixed(0)} ms, GC ${m.gcMs.toFixed(0)} ms (major ${m.gcMajorMs.toFixed(0)} ms, ${m.gcOver25ms} pauses over 25 ms)`,
    );
  }
  const w = l.walWrites;
  if (w) {
    ctx.log(
      `  WAL writes: ${w.writes} for ${w.events} events, mean ${w.meanMs.toFixed(2)} ms, ${w.over25ms} over 25 ms, ${w.over100ms} over 100 ms; visibility waits ${w.visibilityWaitMs.toFixed(0)} ms; of ${w.transactions} transactions ${w.receivedOver25ms} reached the master and ${w.writtenOver25ms} were written more than 25 ms after their commit (${w.receivedOver5ms} and ${w.writtenOver5ms} more than 5 ms); admitted ${Object.entries(
        w.admitted,
      )
        .map(([via, n]) => `${via} ${n}`)
        .join(', ')}`,
    );
  }
}

function record(
  ctx: BenchContext,
  systemName: string,
  l: Latencies,
  caseName: string,
  targets: boolean,
  /** Added to the note of commit→start p50. */
  startNote = '',
): void {
  const counts = `${l.start.n} samples, ${l.missing} missing; achieved ${Math.round(l.achievedRate)} rows/s`;
  for (const [metric, s, limits, note] of [
    ['commit→start', l.start, targets ? { p50: 5, p99: 25 } : {}, counts + startNote],
    ['commit→end', l.end, {}, counts],
  ] as const) {
    for (const p of ['p50', 'p95', 'p99'] as const) {
      const limit = (limits as Partial<Record<string, number>>)[p];
      ctx.record({
        workload: 'W3',
        case: caseName,
        system: systemName,
        metric: `${metric} ${p}`,
        value: s[p],
        unit: 'ms',
        target: limit === undefined ? undefined : { text: `≤ ${limit} ms`, pass: s[p] <= limit },
        otherCores: l.otherCores,
        note: p === 'p50' ? note : p === 'p99' ? `max ${s.max.toFixed(1)} ms` : undefined,
      });
    }
  }
}

/** Each percentile the median of the rounds' (and the max the largest): one line for several runs. */
function medianOfRounds(rounds: Latencies[]): Latencies {
  const of = (pick: (l: Latencies) => ReturnType<typeof summarize>) => ({
    n: rounds.reduce((sum, l) => sum + pick(l).n, 0),
    p50: median(rounds.map((l) => pick(l).p50)),
    p95: median(rounds.map((l) => pick(l).p95)),
    p99: median(rounds.map((l) => pick(l).p99)),
    max: Math.max(...rounds.map((l) => pick(l).max)),
  });
  return {
    rate: rounds[0]!.rate,
    achievedRate: median(rounds.map((l) => l.achievedRate)),
    start: of((l) => l.start),
    end: of((l) => l.end),
    missing: rounds.reduce((sum, l) => sum + l.missing, 0),
    otherCores: median(rounds.map((l) => l.otherCores)),
    slowest: rounds.flatMap((l) => l.slowest),
    timeline: [],
    serverEvents: rounds.flatMap((l) => l.serverEvents),
  };
}

/**
 * Latency depends on the rate, so rppd and graphile-worker also run at graphile-worker's W3 rate, in
 * `rounds` (3) interleaved pairs: one pair's p99 moves by ±0.3 ms from run to run, about the gap
 * between the two (bench/README.md, finding 27). Each figure is the median of its rounds.
 */
async function runAtPeerRate(ctx: BenchContext, rppd: BenchSystem, peer: BenchSystem, rate: number): Promise<void> {
  const rounds = ctx.options.quick ? 1 : 3;
  const runs = new Map<string, Latencies[]>([
    [rppd.name, []],
    [peer.name, []],
    [WAL, []],
  ]);
  for (let round = 1; round <= rounds; round++) {
    for (const system of round % 2 === 1 ? [rppd, peer] : [peer, rppd]) {
      ctx.log(`W3 at ${Math.round(rate)} rows/s, round ${round}/${rounds}: ${system.name}`);
      runs.get(system.name)!.push(await measure(ctx, system, rate));
    }
    ctx.log(`W3 at ${Math.round(rate)} rows/s, round ${round}/${rounds}: rppd, WAL capture`);
    runs.get(WAL)!.push(await measure(ctx, rppd, rate, { capture: 'wal' }));
  }
  const caseName = `${Math.round(rate)} rows/s (graphile-worker's W3 rate), median of ${rounds}`;
  const summary = new Map<string, Latencies>();
  for (const [name, list] of runs) {
    ctx.data[`W3 ${name} at graphile-worker rate`] = list;
    const m = medianOfRounds(list);
    summary.set(name, m);
    const perRound = list.map((l) => `${l.start.p50.toFixed(2)} / ${l.start.p99.toFixed(2)}`).join(', ');
    record(ctx, name, m, caseName, name !== peer.name, `; p50 / p99 per round (ms): ${perRound}`);
  }
  const theirs = summary.get(peer.name)!;
  for (const [name, p] of [rppd.name, WAL].flatMap((n) => (['p50', 'p99'] as const).map((q) => [n, q] as const))) {
    const ratio = summary.get(name)!.start[p] / theirs.start[p];
    ctx.record({
      workload: 'W3',
      case: caseName,
      system: name,
      metric: `commit→start ${p} vs ${peer.name}`,
      value: ratio,
      unit: '×',
      target: { text: '< 1 (lower)', pass: ratio < 1 },
    });
  }
}

export async function runW3(ctx: BenchContext): Promise<void> {
  for (const system of ctx.systems) {
    const w2 = ctx.find('W2', system.name, 'events/s');
    const rate = w2 ? Math.max(10, w2.value / 2) : ctx.options.sizes.w3FallbackRate;
    const l = await measure(ctx, system, rate);
    ctx.data[`W3 ${system.name}`] = l;
    record(
      ctx,
      system.name,
      l,
      `${Math.round(l.rate)} rows/s (${w2 ? 'half its W2 rate' : 'fixed'})`,
      system.name === 'rppd',
    );
  }
  const rppd = ctx.systems.find((s) => s.name === 'rppd');
  const own = ctx.data['W3 rppd'] as Latencies | undefined;
  if (rppd && own) {
    // Half its own W2 rate, as every line: WAL capture's maximum is lower than the trigger's.
    const w2 = ctx.find('W2', WAL, 'events/s');
    const l = await measure(ctx, rppd, w2 ? Math.max(10, w2.value / 2) : own.rate, { capture: 'wal' });
    ctx.data[`W3 ${WAL}`] = l;
    record(ctx, WAL, l, `${Math.round(l.rate)} rows/s (${w2 ? 'half its W2 rate' : "half rppd's W2 rate"})`, true);
  }
  const graphile = ctx.systems.find((s) => s.name === 'graphile-worker');
  const peer = ctx.data['W3 graphile-worker'] as Latencies | undefined;
  if (rppd && graphile && peer) await runAtPeerRate(ctx, rppd, graphile, peer.rate);
}

// W1 write overhead: pgbench single-row autocommit INSERTs into src, with each system's
// trigger and without any, with 1 and 8 client connections. The variants run in interleaved
// rounds (w1Seconds split over `rounds`), so a change of background load hits them alike;
// each figure is the median of its rounds, each ratio is to the no-trigger median.
import type { BenchContext } from '../context.ts';
import { sql } from '../db.ts';
import { median } from '../measure.ts';
import { pgbench } from '../pgbench.ts';
import { holdListenLock } from '../systems/rppd.ts';
import type { BenchSystem, RunningSystem } from '../systems/system.ts';

const TARGET: Record<number, number> = { 1: 0.9, 8: 0.85 };

interface Variant {
  system: BenchSystem | null;
  label: string;
  url: string;
  /** Runs before each round, and what it returns after it (e.g. holding rppd's poll lock). */
  prepare?: (url: string) => Promise<() => Promise<void>>;
  workers: boolean;
  tps: number[];
  other: number[];
}

/** Back to an empty table and queue before every run, so each starts from the same state. */
async function reset(v: Variant): Promise<void> {
  await sql(v.url, `TRUNCATE src, sink${v.system ? `, ${v.system.queueTables.join(', ')}` : ''}`);
  await sql(v.url, 'VACUUM ANALYZE src');
}

async function variants(ctx: BenchContext, clients: number): Promise<Variant[]> {
  const make = (system: BenchSystem | null, label: string, url: string, extra: Partial<Variant> = {}): Variant => ({
    system,
    label,
    url,
    workers: false,
    tps: [],
    other: [],
    ...extra,
  });
  const out = [make(null, 'no trigger', await ctx.freshDb(`w1_plain_c${clients}`))];
  for (const system of ctx.systems) {
    const url = await ctx.freshDb(`w1_${system.name}_c${clients}`);
    await system.install(url);
    if (system.name === 'rppd') {
      out.push(
        make(system, 'trigger only (no node, no NOTIFY)', url),
        make(system, 'node waiting for NOTIFY (NOTIFY per commit)', url, { prepare: holdListenLock }),
        make(system, 'node running (draining while writing)', url, { workers: true }),
      );
      // Capture from the WAL: no trigger on src. One database each, so the slot that keeps the
      // no-node rounds' WAL is not drained by the node-running rounds.
      for (const [label, workers] of [
        ['WAL capture, no node (the slot keeps the WAL)', false],
        ['WAL capture, node running (draining while writing)', true],
      ] as const) {
        const walUrl = await ctx.freshDb(`w1_${system.name}_wal${workers ? '_node' : ''}_c${clients}`);
        await system.install(walUrl, { capture: 'wal' });
        out.push(make(system, label, walUrl, { workers }));
      }
    } else {
      out.push(make(system, 'trigger only (no worker)', url), make(system, 'worker running', url, { workers: true }));
    }
  }
  return out;
}

export async function runW1(ctx: BenchContext): Promise<void> {
  const { w1Seconds, w1Clients, concurrency } = ctx.options.sizes;
  const rounds = ctx.options.quick ? 1 : 3;
  const seconds = Math.max(2, Math.round(w1Seconds / rounds));
  for (const clients of w1Clients) {
    const list = await variants(ctx, clients);
    for (let round = 1; round <= rounds; round++) {
      for (const v of list) {
        await reset(v);
        const release = await v.prepare?.(v.url);
        ctx.log(`W1 ${clients} client(s), round ${round}/${rounds}: ${v.system?.name ?? 'none'} ${v.label}`);
        let running: RunningSystem | undefined;
        try {
          if (v.workers) running = await v.system!.start(v.url, { concurrency });
          const meter = ctx.meter();
          v.tps.push((await pgbench(ctx.pg.binDir, v.url, { clients, seconds })).tps);
          v.other.push(meter.stop().otherCores);
        } finally {
          await running?.stop();
          await release?.();
        }
      }
    }
    for (const url of new Set(list.map((v) => v.url))) await ctx.dropDb(url);
    const base = median(list[0]!.tps);
    const caseName = `${clients} client${clients > 1 ? 's' : ''}, ${rounds}×${seconds} s`;
    for (const v of list) {
      const tps = median(v.tps);
      const ratio = tps / base;
      const target = TARGET[clients];
      const isBase = v.system === null;
      ctx.record({
        workload: 'W1',
        case: caseName,
        system: v.system?.name ?? 'none',
        metric: v.label,
        value: tps,
        unit: 'rows/s',
        ratio: isBase ? undefined : ratio,
        ratioTo: isBase ? undefined : 'no trigger',
        target: v.system?.name === 'rppd' && target ? { text: `≥ ${target}`, pass: ratio >= target } : undefined,
        otherCores: median(v.other),
        note: `rounds: ${v.tps.map((t) => Math.round(t)).join(' / ')}`,
      });
    }
  }
}

// One end-to-end run, shared by W2, W4 and W5: a fresh database, the system installed and
// started, `rows` single-row autocommit INSERTs from pgbench, then wait for every sink row.
// The rate is rows / (last sink row − first insert), both on the database clock.
import type { BenchContext } from '../context.ts';
import { checkSink, orderViolations, sql, waitForSink } from '../db.ts';
import { postgresPids, sampleTrees, sleep } from '../measure.ts';
import { pgbench } from '../pgbench.ts';
import type { BenchSystem, InstallOptions, RunningSystem } from '../systems/system.ts';

export interface ThroughputResult {
  /** events/s from the first insert to the last sink row. */
  rate: number;
  /** rows/s of the insert phase alone. */
  insertRate: number;
  /** How long after the last insert the last sink row came. */
  lagMs: number;
  rows: number;
  sinkRows: number;
  lost: number;
  duplicates: number;
  /**
   * Ordered runs only: sink rows of one key out of event/job id order. Ids are taken in the
   * trigger, before commit, so two concurrent writers of one key can commit in the other order:
   * these may still follow commit order (the contract), which this check cannot see.
   */
  orderViolations?: number;
  /** CPU seconds of the system's processes and of PostgreSQL during the run. */
  cpu: Record<string, number>;
  /** CPU cores used by processes outside the bench meanwhile. */
  otherCores: number;
  complete: boolean;
}

/** How long after the start of its last process a system is measured (see the sleep below). */
export const SETTLE_MS = 12_000;

export async function throughputRun(
  ctx: BenchContext,
  system: BenchSystem,
  options: { label: string; install?: InstallOptions; nodes?: number; rows?: number; env?: Record<string, string> },
): Promise<ThroughputResult> {
  const rows = options.rows ?? ctx.options.sizes.rows;
  const url = await ctx.freshDb(`${options.label}_${system.name}`);
  await system.install(url, options.install);
  let running: RunningSystem | undefined;
  try {
    running = await system.start(url, {
      concurrency: ctx.options.sizes.concurrency,
      nodes: options.nodes,
      env: options.env,
    });
    const startedAt = Date.now(); // its last process is up
    const r = running;
    // Warm-up: a few rows through every worker first (lazy worker start, code compilation),
    // not counted; the measured rows are those after it.
    const warm = ctx.options.sizes.concurrency * 3;
    await pgbench(ctx.pg.binDir, url, { clients: 1, transactions: warm });
    if (!(await waitForSink(url, warm, { timeoutMs: 60_000 })))
      throw new Error(`${system.name}: warm-up rows not handled`);
    // Dirty buffers of earlier workloads (W1 writes a lot) are flushed now, not during the measured run.
    await sql(url, 'CHECKPOINT');
    await sleep(1000);
    // A fresh Node.js process spends its first seconds compiling and, ~8 s after start, one full
    // "memory reducer" collection per isolate (170 ms for an rppd node here, finding 22): the
    // measured rows start once every process of the system is past that (the same for every system).
    await sleep(Math.max(0, startedAt + SETTLE_MS - Date.now()));
    const meter = ctx.meter();
    const sampler = sampleTrees({
      rssOf: () => [],
      cpuOf: { ...perNode(system.name, r.pids()), postgres: () => postgresPids(ctx.pg.dataDir) },
    });
    ctx.log(`${options.label}: ${system.name} inserting ${rows} rows`);
    const inserted = await pgbench(ctx.pg.binDir, url, {
      clients: ctx.options.sizes.insertClients,
      transactions: rows,
    });
    const complete = await waitForSink(url, warm + inserted.transactions, { timeoutMs: Math.max(180_000, rows * 20) });
    await sleep(500); // duplicates, if any, would arrive now
    const cpu = sampler.cpu();
    sampler.stop();
    const { otherCores } = meter.stop();
    const check = await checkSink(url, warm);
    const result: ThroughputResult = {
      rate: check.distinct / ((check.lastSinkMs - check.firstInsertMs) / 1000),
      insertRate: check.srcRows / ((check.lastInsertMs - check.firstInsertMs) / 1000),
      lagMs: check.lastSinkMs - check.lastInsertMs,
      rows: check.srcRows,
      sinkRows: check.rows,
      lost: check.srcRows - check.distinct,
      duplicates: check.rows - check.distinct,
      cpu,
      otherCores,
      complete,
    };
    if (options.install?.ordered) result.orderViolations = await orderViolations(url);
    return result;
  } finally {
    await running?.stop();
    await ctx.dropDb(url);
  }
}

/** One CPU figure per node when there are several (which node did the work), else one for the system. */
function perNode(name: string, pids: number[]): Record<string, () => number[]> {
  if (pids.length <= 1) return { [name]: () => pids };
  return Object.fromEntries(pids.map((pid, i) => [`${name} node ${i + 1}`, () => [pid]]));
}

/** "20000/20000 rows, 0 lost, 0 dup, inserts 1,900/s, last sink 120 ms after last insert, cpu …" */
export function describe(r: ThroughputResult): string {
  const cpu = Object.entries(r.cpu)
    .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
    .join(', ');
  const order = r.orderViolations === undefined ? '' : `, ${r.orderViolations} out of id order`;
  return (
    `${r.sinkRows}/${r.rows} sink rows, ${r.lost} lost, ${r.duplicates} dup${order}; inserts ${Math.round(r.insertRate)}/s, ` +
    `last sink ${Math.round(r.lagMs)} ms after last insert; cpu ${cpu}${r.complete ? '' : '; INCOMPLETE (timed out)'}`
  );
}

/** The ok-ness of a run: everything arrived once. */
export function exact(r: ThroughputResult): boolean {
  return r.complete && r.lost === 0 && r.duplicates === 0;
}

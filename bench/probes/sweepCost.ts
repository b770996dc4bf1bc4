// What the master's 1 s sweep for late commits costs the server across a backlog drain
// (bench/README.md, finding 34): W6's set-up with pg_stat_statements, sampled every 5 s.
//   node --import tsx bench/probes/sweepCost.ts [events]   (default 400,000)
// Run it from two checkouts to compare them; the host's speed moves, so interleave the runs.

import { startPg } from '../../tests/support/pgServer.ts';
import { makeContext } from '../context.ts';
import { sql } from '../db.ts';
import { parseOptions } from '../options.ts';
import { rppd } from '../systems/rppd.ts';
import { drain } from '../workloads/w6Backlog.ts';

const events = Number(process.argv[2] ?? 400_000);
// The sweep's statement before (id <= cursor) and after (its floor, with txid_current()).
const SWEEP = `(query LIKE '%txid_current()%' OR query LIKE 'SELECT id FROM %WHERE id <= $1 ORDER BY id')`;

const pg = await startPg({
  durable: true,
  settings: {
    shared_preload_libraries: 'pg_stat_statements',
    'pg_stat_statements.track': 'all',
    log_autovacuum_min_duration: 0,
  },
});
await sql(pg.url, 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
const ctx = makeContext(pg, parseOptions([]));
const t0 = Date.now();
let prev = { calls: 0, ms: 0 };
let dbUrl = '';
let timer: NodeJS.Timeout | undefined;

async function totals(): Promise<{ calls: number; ms: number }> {
  const [r] = await sql(
    pg.url,
    `SELECT coalesce(sum(calls), 0)::int AS calls, coalesce(sum(total_exec_time), 0)::float8 AS ms
       FROM pg_stat_statements WHERE ${SWEEP}`,
  );
  return { calls: Number(r!.calls), ms: Number(r!.ms) };
}

async function sample(): Promise<void> {
  const now = await totals();
  const [s] = await sql(dbUrl, 'SELECT count(*)::int AS n FROM sink');
  const calls = now.calls - prev.calls;
  const ms = now.ms - prev.ms;
  console.log(
    `${((Date.now() - t0) / 1000).toFixed(0)} s, ${s!.n} drained: ${calls} sweeps, ${(calls ? ms / calls : 0).toFixed(2)} ms each`,
  );
  prev = now;
}

try {
  const result = await drain(ctx, rppd, events, {
    beforeStart: async (url) => {
      dbUrl = url;
      await sql(pg.url, 'SELECT pg_stat_statements_reset()');
    },
    onRunning: () => {
      timer = setInterval(() => void sample().catch(() => undefined), 5000);
    },
    onDrained: () => clearInterval(timer),
  });
  await sample();
  const all = await totals();
  const cpu = Object.entries(result.cpu)
    .map(([k, v]) => `${k} ${v.toFixed(0)} s`)
    .join(', ');
  console.log(
    `drain ${result.rate.toFixed(0)} events/s (per 10 %: ${result.slices.map((s) => s.toFixed(0)).join(' / ')}), ` +
      `CPU ${cpu}, ${result.lost} lost, ${result.duplicates} duplicates`,
  );
  console.log(`sweeps: ${all.calls}, ${all.ms.toFixed(0)} ms of server time in all`);
  for (const e of result.serverEvents) console.log(`server at ${e.atSec} s: ${e.text}`);
} finally {
  clearInterval(timer);
  await pg.stop();
}

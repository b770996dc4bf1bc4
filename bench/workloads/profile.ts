// P: what bounds rppd. A node drains a backlog under `node --cpu-prof` on its own server with
// pg_stat_statements; then the CPU split (node vs PostgreSQL), the node's hottest functions,
// the statements that took the database's time, and EXPLAIN (ANALYZE, BUFFERS) of the hot
// queries of src/db/queries/events.ts against a backlog.
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deleteEventsSql, selectEventsSql, sweepIdsSql } from '../../src/db/queries/events.ts';
import { startPg } from '../../tests/support/pgServer.ts';
import { type BenchContext, makeContext } from '../context.ts';
import { profileMarkdown, summarizeProfile } from '../cpuProfile.ts';
import { sql, withDb } from '../db.ts';
import { sleep, threadCpu } from '../measure.ts';
import { RPPD_SCHEMA, rppd } from '../systems/rppd.ts';
import { createBacklog, drain } from './w6Backlog.ts';

const Q = `${RPPD_SCHEMA}.rppd_event_queue`;
const hookPath = fileURLToPath(new URL('../profileHook.mjs', import.meta.url));

/** The hot statements, as src/db/queries/events.ts writes them, on a backlog of `backlog` events. */
async function explainHotQueries(url: string): Promise<string[]> {
  return withDb(url, async (db) => {
    const { rows } = await db.query<{ lo: string; hi: string }>(`SELECT min(id) AS lo, max(id) AS hi FROM ${Q}`);
    const lo = BigInt(rows[0]!.lo);
    const cursor = String(lo + 5000n);
    const ids = Array.from({ length: 200 }, (_, i) => String(lo + BigInt(i)));
    const plans: [string, string, unknown[], boolean][] = [
      [
        'readEventsAfter (cursor 5,000 events in, limit 1000)',
        selectEventsSql(RPPD_SCHEMA, 'q.id > $1', 'LIMIT 1000'),
        [cursor],
        false,
      ],
      [
        'readEventIdsForSweep (the 1 s sweep from floor 0, window of 5,000)',
        sweepIdsSql(RPPD_SCHEMA),
        ['0', cursor],
        false,
      ],
      [
        'deleteEvents (a batch of 200)',
        `WITH ${deleteEventsSql(RPPD_SCHEMA, '$1')} SELECT count(*) FROM gone`,
        [ids],
        true,
      ],
      [
        'trigger: one INSERT into src through rppd_event()',
        `INSERT INTO src (k, payload) VALUES (1, 'payload')`,
        [],
        true,
      ],
    ];
    const out: string[] = ['### EXPLAIN (ANALYZE, BUFFERS) of the hot queries, on the backlog before the drain', ''];
    for (const [title, text, params, rollback] of plans) {
      await db.query('BEGIN');
      try {
        const plan = await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${text}`, params);
        out.push(`${title}:`, '', '```', ...plan.rows.map((r) => r['QUERY PLAN']), '```', '');
      } finally {
        await db.query(rollback ? 'ROLLBACK' : 'COMMIT');
      }
    }
    return out;
  });
}

async function topStatements(
  serverUrl: string,
  dbUrl: string,
): Promise<{ markdown: string[]; rows: Record<string, unknown>[] }> {
  const rows = await sql(
    serverUrl,
    `SELECT calls::int, round(total_exec_time::numeric, 0)::float8 AS total_ms,
            round(mean_exec_time::numeric, 3)::float8 AS mean_ms, rows::bigint AS rows,
            shared_blks_hit + shared_blks_read AS blocks, wal_bytes::bigint AS wal_bytes,
            left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query
       FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)
      ORDER BY total_exec_time DESC LIMIT 15`,
    [new URL(dbUrl).pathname.slice(1)],
  );
  const md = [
    '### pg_stat_statements during the drain (top 15 by total time)',
    '',
    '| calls | total ms | mean ms | rows | WAL bytes | query |',
    '| ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows.map(
      (r) =>
        `| ${r.calls} | ${r.total_ms} | ${r.mean_ms} | ${r.rows} | ${r.wal_bytes} | \`${String(r.query).replaceAll('|', '\\|')}\` |`,
    ),
    '',
  ];
  return { markdown: md, rows };
}

function threadTable(before: Map<string, { name: string; cpu: number }>, after: typeof before, wallSec: number) {
  const groups = new Map<string, { threads: number; cpu: number }>();
  for (const [tid, { name, cpu }] of after) {
    const used = cpu - (before.get(tid)?.cpu ?? 0);
    // Node names its threads: main, JS runtime workers ("node" in Node 20), V8 platform, libuv pool.
    const g = groups.get(name) ?? { threads: 0, cpu: 0 };
    g.threads++;
    g.cpu += used;
    groups.set(name, g);
  }
  const rows = [...groups].sort((a, b) => b[1].cpu - a[1].cpu);
  return [
    `### CPU by thread of the node process (/proc/<pid>/task, ${wallSec.toFixed(1)} s of drain)`,
    '',
    '| thread (comm) | threads | CPU s | cores |',
    '| --- | ---: | ---: | ---: |',
    ...rows.map(([name, g]) => `| ${name} | ${g.threads} | ${g.cpu.toFixed(2)} | ${(g.cpu / wallSec).toFixed(2)} |`),
    '',
  ];
}

export async function runProfile(ctx: BenchContext): Promise<void> {
  const events = ctx.options.sizes.profileEvents;
  // Its own server: pg_stat_statements must be preloaded, and must not tax the other workloads.
  const server = await startPg({
    durable: true,
    settings: { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'all' },
  });
  try {
    const pctx = makeContext(server, ctx.options);
    const profDir = mkdtempSync(join(tmpdir(), 'rppd-bench-prof-'));
    // Plans first, on a backlog of the same size, in a database of their own.
    const planUrl = await pctx.freshDb('p_plans');
    await rppd.install(planUrl);
    await createBacklog(planUrl, events);
    await sql(planUrl, `VACUUM ANALYZE ${Q}`);
    const plans = await explainHotQueries(planUrl);

    // The profiled drain: the W6 set-up with the inspector hook preloaded (profiles 15 s from
    // 3 s after start), thread CPU from /proc, statistics reset once the backlog is there.
    await sql(server.url, 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    let before = new Map<string, { name: string; cpu: number }>();
    let after = before;
    let t0 = 0;
    let wallSec = 0;
    const result = await drain(pctx, rppd, events, {
      nodeArgs: ['--import', hookPath],
      // The window must end before the drain does (50,000 events take 13 s at 3,700 ev/s here).
      env: { RPPD_BENCH_PROFILE_DIR: profDir, RPPD_BENCH_PROFILE_DELAY_MS: '3000', RPPD_BENCH_PROFILE_MS: '8000' },
      beforeStart: async () => {
        await sql(server.url, 'SELECT pg_stat_statements_reset()');
      },
      onRunning: (r) => {
        before = threadCpu(r.pids()[0]!);
        t0 = performance.now();
      },
      onDrained: (r) => {
        after = threadCpu(r.pids()[0]!);
        wallSec = (performance.now() - t0) / 1000;
      },
      // The hook writes `done` after the profiles; a node stopped before that leaves none.
      beforeStop: async () => {
        for (let i = 0; i < 300 && !existsSync(join(profDir, 'done')); i++) await sleep(100);
      },
    });
    const stats = await topStatements(server.url, result.url);
    const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
    const main = files.filter((f) => f === 'main.cpuprofile').map((f) => join(profDir, f));
    const workers = files.filter((f) => f.startsWith('worker-')).map((f) => join(profDir, f));
    const cpuText = Object.entries(result.cpu)
      .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
      .join(', ');
    const md: string[] = [
      '## P: profile of one rppd node draining a backlog',
      '',
      `${events.toLocaleString('en-US')} events drained at ${Math.round(result.rate)} events/s (under the profiler); ` +
        `CPU: ${cpuText} over ${wallSec.toFixed(0)} s of drain (${cpus().length} cores); ` +
        `per event: node ${(((result.cpu.rppd ?? 0) / events) * 1000).toFixed(2)} ms, ` +
        `PostgreSQL ${(((result.cpu.postgres ?? 0) / events) * 1000).toFixed(2)} ms.`,
      '',
      ...threadTable(before, after, wallSec),
    ];
    const summaries = {
      main: main.length ? summarizeProfile(main) : undefined,
      workers: workers.length ? summarizeProfile(workers) : undefined,
    };
    ctx.data['P profiles'] = summaries;
    ctx.data['P statements'] = stats.rows;
    ctx.data['P drain'] = result;
    if (summaries.main) md.push(...profileMarkdown(summaries.main, 'main thread (inspector profile, 8 s)'));
    if (summaries.workers) {
      md.push(...profileMarkdown(summaries.workers, `${workers.length} worker threads together (8 s)`));
    }
    if (!summaries.main) md.push('No profile was written (the drain ended before the profile window).', '');
    md.push(...stats.markdown, ...plans);
    ctx.extraMarkdown.push(...md);
    ctx.record({
      workload: 'P',
      case: `${events.toLocaleString('en-US')}-event drain, profiled`,
      system: 'rppd',
      metric: 'drain events/s (under the profiler)',
      value: result.rate,
      unit: 'ev/s',
      otherCores: result.otherCores,
      note: `cpu ${cpuText}; profiles in ${profDir}`,
    });
  } finally {
    await server.stop();
  }
}

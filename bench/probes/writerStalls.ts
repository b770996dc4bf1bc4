// What the writers and rppd's backends wait on at a steady W3 rate, and what a stalled INSERT waited
// on (bench/README.md, finding 35): capture by trigger and from the WAL, rounds interleaved.
//   RATE=323 SECS=30 MODES=trigger,wal,trigger,wal node --import tsx bench/probes/writerStalls.ts
// Samples pg_stat_activity every 5 ms, reads pg_stat_wal (with track_wal_io_timing) and the CPU of
// each server process from /proc before and after each round.

import pg from 'pg';
import { startPg } from '../../tests/support/pgServer.ts';
import { makeContext } from '../context.ts';
import { sql, waitForSink } from '../db.ts';
import { cpuSeconds, machineBusySeconds, nowMs as now, sleep, summarize } from '../measure.ts';
import { parseOptions } from '../options.ts';
import { rppd } from '../systems/rppd.ts';
import { steadyInserts } from '../workloads/w3Latency.ts';

const rate = Number(process.env.RATE ?? 323);
const seconds = Number(process.env.SECS ?? 30);
const modes = (process.env.MODES ?? 'trigger,wal,trigger,wal').split(',') as ('trigger' | 'wal')[];
const WAL_STAT = `SELECT wal_records::float8 AS records, wal_fpi::float8 AS fpi, wal_bytes::float8 AS bytes,
  wal_write::float8 AS writes, wal_sync::float8 AS syncs, wal_sync_time AS sync_ms FROM pg_stat_wal`;
const ACTIVITY = `SELECT coalesce(nullif(application_name, ''), backend_type) AS who,
  coalesce(wait_event_type || ':' || wait_event, 'cpu') AS wait
  FROM pg_stat_activity WHERE (state = 'active' OR backend_type <> 'client backend') AND pid <> pg_backend_pid()
  AND coalesce(wait_event_type, '') <> 'Activity'`;

interface Sample {
  at: number;
  rows: { who: string; wait: string }[];
}

/** CPU seconds of each server process, summed by application name and backend type. */
async function serverCpu(url: string): Promise<Map<string, number>> {
  const procs = await sql(
    url,
    `SELECT pid, backend_type AS type, coalesce(nullif(application_name, ''), backend_type) AS who
    FROM pg_stat_activity`,
  );
  const cpu = new Map<string, number>();
  for (const p of procs) {
    const key = `${String(p.who).slice(0, 22)} [${p.type}]`;
    cpu.set(key, (cpu.get(key) ?? 0) + cpuSeconds(Number(p.pid)));
  }
  return cpu;
}

function countWaits(samples: Sample[]): string {
  const counts = new Map<string, number>();
  for (const s of samples) {
    for (const r of s.rows) {
      const key = `${r.who.slice(0, 20)} ${r.wait}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 8)
    .map(([k, v]) => `${k} ×${v}`)
    .join(', ');
}

const server = await startPg({
  durable: true,
  settings: { wal_level: 'logical', track_wal_io_timing: 'on', log_checkpoints: 'on' },
});
const ctx = makeContext(server, parseOptions([]));
try {
  for (const mode of modes) {
    const url = await ctx.freshDb(`stalls_${mode}`);
    await rppd.install(url, { capture: mode });
    const running = await rppd.start(url, { concurrency: 10 });
    await sleep(2500);
    const cpu0 = await serverCpu(server.url);
    const wal0 = (await sql(server.url, WAL_STAT))[0]!;
    const busy0 = machineBusySeconds();
    const samples: Sample[] = [];
    let sampling = true;
    const sampler = (async () => {
      const c = new pg.Client({ connectionString: server.url });
      await c.connect();
      while (sampling) {
        const at = now();
        samples.push({ at, rows: (await c.query(ACTIVITY)).rows });
        await sleep(5);
      }
      await c.end();
    })();
    const t0 = now();
    const { committed, writes, total } = await steadyInserts(url, rate, seconds, 0);
    await waitForSink(url, total, { timeoutMs: 120_000 });
    sampling = false;
    await sampler;
    const wall = (now() - t0) / 1000;
    const busy = machineBusySeconds() - busy0;
    const wal1 = (await sql(server.url, WAL_STAT))[0]!;
    const cpu1 = await serverCpu(server.url);
    const sink = await sql(url, 'SELECT src_id::text AS id, started_ms FROM sink');
    const starts = summarize(
      sink.map((r) => Number(r.started_ms) - committed.get(String(r.id))!).sort((a, b) => a - b),
    );
    const took = summarize(writes.map((w) => w.took).sort((a, b) => a - b));
    const d = (k: string) => Number(wal1[k]) - Number(wal0[k]);
    console.log(`\n## ${mode} at ${rate} rows/s, ${total} rows; machine ${(busy / wall).toFixed(2)} cores busy`);
    console.log(
      `commit→start p50 ${starts.p50.toFixed(2)} p99 ${starts.p99.toFixed(2)} max ${starts.max.toFixed(0)} ms`,
    );
    console.log(
      `writers' INSERT p50 ${took.p50.toFixed(2)} p99 ${took.p99.toFixed(2)} max ${took.max.toFixed(0)} ms, ` +
        `${writes.filter((w) => w.took > 25).length} over 25 ms`,
    );
    console.log(
      `WAL per row: ${(d('records') / total).toFixed(1)} records, ${(d('bytes') / total).toFixed(0)} bytes, ` +
        `${(d('fpi') / total).toFixed(2)} full pages; ${d('syncs')} syncs (${(d('syncs') / wall).toFixed(0)}/s), ` +
        `mean ${(d('sync_ms') / d('syncs')).toFixed(2)} ms`,
    );
    console.log(
      `server CPU s: ${[...cpu1]
        .map(([k, v]) => [k, v - (cpu0.get(k) ?? 0)] as const)
        .filter(([, v]) => v >= 0.1)
        .map(([k, v]) => `${k} ${v.toFixed(1)}`)
        .join(', ')}`,
    );
    console.log(`samples (${samples.length}): ${countWaits(samples)}`);
    for (const w of writes
      .filter((x) => x.took > 50)
      .sort((a, b) => b.took - a.took)
      .slice(0, 3)) {
      const during = samples.filter((s) => s.at >= w.at - w.took && s.at <= w.at);
      console.log(
        `  INSERT of ${w.took.toFixed(0)} ms at +${((w.at - t0) / 1000).toFixed(1)} s: ${countWaits(during)}`,
      );
    }
    await running.stop();
    await ctx.dropDb(url);
  }
} finally {
  await server.stop();
}

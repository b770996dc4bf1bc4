// Resident memory of a draining node over time (main process VmRSS / process tree), by runtime and
// max_db_connections (bench/README.md, "What bounds rppd" item 4).
//   node --import tsx bench/probes/rssByWorkers.ts
import { startPg } from '../../tests/support/pgServer.ts';
import { BENCH_TABLES, sql, waitForSink } from '../db.ts';
import { processTree, statusMb } from '../measure.ts';
import { rppd } from '../systems/rppd.ts';
import { createBacklog } from '../workloads/w6Backlog.ts';

const pg = await startPg({ durable: true });
const runs: [string, number, number][] = [
  ['js', 10, 100000],
  ['js', 1, 10000],
  ['python', 10, 20000],
];
for (const [lang, n, events] of runs) {
  const url = await pg.createDatabase(`rss_${lang}_${n}`);
  await sql(url, BENCH_TABLES);
  await rppd.install(url, { lang: lang as 'js' | 'python' });
  await createBacklog(url, events);
  const r = await rppd.start(url, { concurrency: n });
  const pid = r.pids()[0]!;
  const idle = statusMb(pid, 'VmRSS');
  const marks: string[] = [];
  let next = 1;
  const t0 = Date.now();
  await waitForSink(url, events, {
    timeoutMs: 900000,
    intervalMs: 250,
    onProgress: (c) => {
      while (next <= 10 && c >= (events * next) / 10) {
        const tree = processTree(pid).reduce((s, p) => s + statusMb(p, 'VmRSS'), 0);
        marks.push(`${next * 10}%:${statusMb(pid, 'VmRSS').toFixed(0)}/${tree.toFixed(0)}`);
        next++;
      }
    },
  });
  console.log(
    `${lang} max_db_connections=${n} ${events} events: start ${idle.toFixed(0)} MiB; main/tree MiB at ${marks.join(' ')}; hwm ${statusMb(pid, 'VmHWM').toFixed(0)}; ${Math.round(events / ((Date.now() - t0) / 1000))} ev/s`,
  );
  await r.stop();
}
await pg.stop();

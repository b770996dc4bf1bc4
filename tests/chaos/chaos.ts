// npm run chaos: the full chaos run (3 nodes, 25,000 events over 200 ordered keys and
// unordered ones; SIGKILL of the master twice and of a worker once, an immediate
// PostgreSQL restart). Prints the figures docs/cluster.md quotes; exit code 1 when
// anything was lost, ran out of order, or overlapped. Sizes can be changed by env:
// CHAOS_ORDERED, CHAOS_FREE, CHAOS_KEYS, CHAOS_RATE.
import { formatReport, runChaos } from './chaosRun.ts';

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

const report = await runChaos({
  orderedKeys: num('CHAOS_KEYS', 200),
  orderedEvents: num('CHAOS_ORDERED', 20_000),
  freeEvents: num('CHAOS_FREE', 5_000),
  ratePerSec: num('CHAOS_RATE', 250),
  actions: ['kill-master', 'kill-worker', 'restart-pg', 'kill-master'],
  maxDbConnections: 4,
  timeoutMs: 15 * 60_000,
  log: (line) => console.log(line),
});
console.log(formatReport(report));
const ok = report.lost === 0 && report.orderViolations === 0 && report.overlaps === 0 && report.crashes === 0;
console.log(ok ? 'chaos: OK' : 'chaos: FAILED');
process.exit(ok ? 0 : 1);

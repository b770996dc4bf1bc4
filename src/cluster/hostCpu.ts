// The share of this host's CPU time that was idle between two readings (os.cpus(), which reads
// /proc/stat on Linux). A node publishes it with its heartbeat; the master spreads runs only to
// nodes whose host has CPU to spare (clusterExecutor.ts). In a container this is the host's CPU,
// not the container's quota.
import { cpus } from 'node:os';

function read(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const { times } of cpus()) {
    idle += times.idle;
    total += times.user + times.nice + times.sys + times.idle + times.irq;
  }
  return { idle, total };
}

/** Each call: the idle share (0–1, two decimals) since the previous call, or null when no time passed. */
export function makeHostCpuIdle(): () => number | null {
  let last = read();
  return () => {
    const now = read();
    const total = now.total - last.total;
    const idle = now.idle - last.idle;
    last = now;
    return total > 0 ? Math.round((idle / total) * 100) / 100 : null;
  };
}

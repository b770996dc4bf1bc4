// The share of this host's CPU time that was idle between two readings (os.cpus(), which reads
// /proc/stat on Linux). A node publishes it with its heartbeat; the master spreads runs only to
// nodes whose host has CPU to spare (clusterExecutor.ts). In a container this is the host's CPU,
// not the container's quota.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, hostname } from 'node:os';

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

/**
 * Which machine this process runs on, so the master can judge nodes on its own machine by its own
 * live reading instead of their last heartbeat: a hash of /etc/machine-id, else of the host name.
 */
export function machineId(): string {
  let id: string;
  try {
    id = readFileSync('/etc/machine-id', 'utf8').trim();
  } catch {
    id = '';
  }
  return createHash('sha256')
    .update(id || `host:${hostname()}`)
    .digest('hex')
    .slice(0, 16);
}

// The share of this host's CPU time that was idle between two readings: the first line of
// /proc/stat on Linux (4 us a reading, where os.cpus() takes ~40 us, reading /proc/cpuinfo too),
// os.cpus() elsewhere. A node publishes it with its heartbeat; the master spreads runs only to
// nodes whose host has CPU to spare (clusterExecutor.ts), reading its own every 200 ms. In a
// container this is the host's CPU, not the container's quota.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { cpus, hostname } from 'node:os';

type Reader = () => { idle: number; total: number };

function fromOs(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const { times } of cpus()) {
    idle += times.idle;
    total += times.user + times.nice + times.sys + times.idle + times.irq;
  }
  return { idle, total };
}

/** "cpu  user nice system idle iowait irq softirq steal …" (USER_HZ ticks); iowait counts as idle. */
export function parseProcStat(text: string): { idle: number; total: number } | null {
  const m = /^cpu +(\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)/.exec(text);
  if (!m) return null;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = m.slice(1).map(Number) as number[];
  return { idle: idle! + iowait!, total: user! + nice! + system! + idle! + iowait! + irq! + softirq! + steal! };
}

// One descriptor for the process, opened at the first reading and kept.
let shared: Reader | null | undefined;

function procStatReader(): Reader | null {
  if (shared !== undefined) return shared;
  shared = null;
  let fd: number;
  try {
    fd = openSync('/proc/stat', 'r');
  } catch {
    return null;
  }
  const buf = Buffer.alloc(256);
  const read = () => parseProcStat(buf.toString('latin1', 0, readSync(fd, buf, 0, buf.length, 0)));
  if (!read()) {
    closeSync(fd);
    return null;
  }
  shared = () => read() ?? { idle: 0, total: 0 };
  return shared;
}

/** Each call: the idle share (0–1, two decimals) since the previous call, or null when no time passed. */
export function makeHostCpuIdle(): () => number | null {
  const read = procStatReader() ?? fromOs;
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

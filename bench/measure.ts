// Percentiles and what the kernel says about processes: resident memory (/proc/<pid>/status)
// and CPU time (/proc/<pid>/stat), summed over a process and its descendants.
import { readdirSync, readFileSync } from 'node:fs';

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function summarize(values: number[]): { n: number; p50: number; p95: number; p99: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** pid and all its descendants (threads' children included). */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    if (!readOr(`/proc/${p}/stat`)) continue;
    out.push(p);
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {}
    for (const t of tasks) {
      for (const c of readOr(`/proc/${p}/task/${t}/children`).split(/\s+/)) if (c) stack.push(Number(c));
    }
  }
  return out;
}

/** A field of /proc/<pid>/status in MiB (VmRSS, VmHWM). */
export function statusMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readOr(`/proc/${pid}/status`));
  return m ? Number(m[1]) / 1024 : 0;
}

/** utime + stime of one process in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readOr(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after "(comm) ": state is index 0, utime 11, stime 12 (clock ticks, 100 per second here).
  return fields.length > 12 ? (Number(fields[11]) + Number(fields[12])) / 100 : 0;
}

export interface TreeSampler {
  /** Peak of the summed VmRSS of the `rssOf` trees, MiB. */
  peakRssMb(): number;
  /** CPU seconds used by each group's trees since start (processes that ended early are kept). */
  cpu(): Record<string, number>;
  stop(): void;
}

export interface SampleOptions {
  /** Roots whose trees' resident memory is summed and peaked. */
  rssOf: () => number[];
  /** Named groups of roots whose trees' CPU time is counted. */
  cpuOf?: Record<string, () => number[]>;
  intervalMs?: number;
}

export function sampleTrees(options: SampleOptions): TreeSampler {
  let peak = 0;
  const firstSeen = new Map<number, number>();
  const lastSeen = new Map<number, { group: string; cpu: number }>();
  const tick = () => {
    let rss = 0;
    for (const root of options.rssOf()) for (const pid of processTree(root)) rss += statusMb(pid, 'VmRSS');
    peak = Math.max(peak, rss);
    for (const [group, roots] of Object.entries(options.cpuOf ?? {})) {
      for (const root of roots()) {
        for (const pid of processTree(root)) {
          const cpu = cpuSeconds(pid);
          if (!firstSeen.has(pid)) firstSeen.set(pid, cpu);
          lastSeen.set(pid, { group, cpu });
        }
      }
    }
  };
  tick();
  const timer = setInterval(tick, options.intervalMs ?? 250);
  return {
    peakRssMb: () => peak,
    cpu() {
      tick();
      const out: Record<string, number> = {};
      for (const [pid, { group, cpu }] of lastSeen) out[group] = (out[group] ?? 0) + cpu - (firstSeen.get(pid) ?? cpu);
      return out;
    },
    stop: () => clearInterval(timer),
  };
}

/** The postmaster's pid (first line of postmaster.pid) and its children: every backend. */
export function postgresPids(dataDir: string): number[] {
  const pid = Number(readOr(`${dataDir}/postmaster.pid`).split('\n')[0]);
  return pid ? [pid] : [];
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const nowMs = () => performance.timeOrigin + performance.now();

/** Busy CPU seconds of the whole machine (all but idle and iowait), from /proc/stat. */
export function machineBusySeconds(): number {
  const line = readOr('/proc/stat').split('\n')[0] ?? '';
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / 100;
}

export interface LoadMeter {
  /** CPU cores used by processes that are not this bench's (its children, its PostgreSQL) on average. */
  stop(): { otherCores: number; busyCores: number };
}

/**
 * The machine is shared (other work may run on it at the same time): measures how much CPU
 * everything else used while a measurement ran, so results can be read with that in mind.
 */
export function loadMeter(dataDirs: () => string[]): LoadMeter {
  const t0 = performance.now();
  const busy0 = machineBusySeconds();
  const ours = sampleTrees({
    rssOf: () => [],
    cpuOf: { ours: () => [process.pid, ...dataDirs().flatMap((d) => postgresPids(d))] },
    intervalMs: 200,
  });
  return {
    stop() {
      const mine = ours.cpu().ours ?? 0;
      ours.stop();
      const wall = (performance.now() - t0) / 1000;
      const busy = machineBusySeconds() - busy0;
      return { otherCores: Math.max(0, (busy - mine) / wall), busyCores: busy / wall };
    },
  };
}

/** CPU seconds of each thread of a process, with its name (/proc/<pid>/task/<tid>/comm). */
export function threadCpu(pid: number): Map<string, { name: string; cpu: number }> {
  const out = new Map<string, { name: string; cpu: number }>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {}
  for (const tid of tids) {
    const stat = readOr(`/proc/${pid}/task/${tid}/stat`);
    if (!stat) continue;
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const name = tid === String(pid) ? 'main thread' : readOr(`/proc/${pid}/task/${tid}/comm`).trim();
    out.set(tid, { name, cpu: (Number(f[11]) + Number(f[12])) / 100 });
  }
  return out;
}

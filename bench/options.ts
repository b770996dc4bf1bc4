// The bench's command line: which workloads, how big. `--quick` is a ~5 minute smoke run;
// the default sizes are the ones the targets in bench/README.md are stated for.

export const WORKLOADS = ['W1', 'W2', 'W3', 'W4', 'W5', 'W6', 'P'] as const;
export type WorkloadId = (typeof WORKLOADS)[number];

export interface Sizes {
  /** W1: seconds per pgbench run. */
  w1Seconds: number;
  /** W1: client connections to measure. */
  w1Clients: number[];
  /** W2/W4/W5: rows inserted per run. */
  rows: number;
  /** W2/W4/W5: pgbench connections inserting them (single-row autocommit). */
  insertClients: number;
  /** W3: seconds of steady-rate inserts (after warmUpSeconds). */
  w3Seconds: number;
  w3WarmUpSeconds: number;
  /** W3: rows/s when W2 did not run in the same invocation. */
  w3FallbackRate: number;
  /** W6: events of rppd's backlog, and of the peers'. */
  w6Events: number;
  w6PeerEvents: number;
  /** P: events drained by the profiled node. */
  profileEvents: number;
  /** Concurrent function runs / jobs for every system. */
  concurrency: number;
}

export interface BenchOptions {
  quick: boolean;
  only: ReadonlySet<WorkloadId>;
  /** W2: add the 3-node rppd line. */
  multiNode: boolean;
  /** Systems to run (default all); ratios need the ones they compare. */
  systems: ReadonlySet<string>;
  sizes: Sizes;
}

const FULL: Sizes = {
  w1Seconds: 15,
  w1Clients: [1, 8],
  rows: 20_000,
  insertClients: 8,
  w3Seconds: 30,
  w3WarmUpSeconds: 10,
  w3FallbackRate: 300,
  w6Events: 1_000_000,
  w6PeerEvents: 100_000,
  profileEvents: 50_000,
  concurrency: 10,
};

const QUICK: Sizes = {
  ...FULL,
  w1Seconds: 5,
  rows: 4_000,
  w3Seconds: 8,
  w3WarmUpSeconds: 2,
  w6Events: 40_000,
  w6PeerEvents: 10_000,
  profileEvents: 20_000,
};

const NUMERIC_FLAGS: Partial<Record<string, keyof Sizes>> = {
  '--w1-seconds': 'w1Seconds',
  '--rows': 'rows',
  '--w3-seconds': 'w3Seconds',
  '--w3-rate': 'w3FallbackRate',
  '--w6-events': 'w6Events',
  '--w6-peer-events': 'w6PeerEvents',
  '--profile-events': 'profileEvents',
  '--concurrency': 'concurrency',
};

export const USAGE = `npm run bench -- [--quick] [--only=W1,W2,…] [--systems=rppd,graphile-worker,pg-boss]
  [--multi-node] [--rows=N] [--w1-seconds=N] [--w1-clients=1,8]
  [--w3-seconds=N] [--w3-rate=N] [--w6-events=N] [--w6-peer-events=N] [--profile-events=N] [--concurrency=N]
workloads: ${WORKLOADS.join(', ')} (P = profile of the rppd node); see bench/README.md`;

export function parseOptions(argv: string[]): BenchOptions {
  const quick = argv.includes('--quick');
  const sizes: Sizes = { ...(quick ? QUICK : FULL) };
  let only: Set<WorkloadId> = new Set(WORKLOADS);
  let multiNode = false;
  let systems: Set<string> = new Set(['rppd', 'graphile-worker', 'pg-boss']);
  for (const arg of argv) {
    const [flag, value] = arg.split('=', 2) as [string, string | undefined];
    if (flag === '--quick') continue;
    if (flag === '--multi-node') {
      multiNode = true;
    } else if (flag === '--systems' && value) {
      systems = new Set(value.split(',').map((s) => s.trim()));
    } else if (flag === '--only' && value) {
      const ids = value.split(',').map((s) => s.trim().toUpperCase());
      const bad = ids.filter((id) => !(WORKLOADS as readonly string[]).includes(id));
      if (bad.length) throw new Error(`unknown workload ${bad.join(', ')}\n${USAGE}`);
      only = new Set(ids as WorkloadId[]);
    } else if (NUMERIC_FLAGS[flag] && value && /^\d+$/.test(value)) {
      sizes[NUMERIC_FLAGS[flag]!] = Number(value) as never;
    } else if (flag === '--w1-clients' && value) {
      sizes.w1Clients = value.split(',').map(Number);
    } else {
      throw new Error(`unknown argument ${arg}\n${USAGE}`);
    }
  }
  return { quick, only, multiNode, systems, sizes };
}

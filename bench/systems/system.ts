// What every compared system offers the workloads: install into a fresh database (its schema
// plus a trigger on src that enqueues one job/event per inserted row), start workers, stop.

export type SystemName = 'rppd' | 'graphile-worker' | 'pg-boss';

export interface InstallOptions {
  /** The handler's language; only rppd has another than JS. */
  lang?: 'js' | 'python';
  /** Keep the order of events per value of src.k (rppd: topic '.k' with queue = true; graphile: queue_name per k). */
  ordered?: boolean;
  /** rppd only: capture src by the rppd_event() trigger (default) or from the WAL (rppd_wal_capture). */
  capture?: 'trigger' | 'wal';
}

export interface StartOptions {
  /** Jobs/functions running at once. */
  concurrency: number;
  /** rppd only: nodes started on the same database. */
  nodes?: number;
  /** Extra environment of the worker processes. */
  env?: Record<string, string>;
  /** rppd only: node flags of the node processes (e.g. --cpu-prof). */
  nodeArgs?: string[];
}

export interface RunningSystem {
  /** Root pids of the worker processes (their children are found through /proc). */
  pids(): number[];
  /** Graceful stop (SIGTERM), waiting for exit. */
  stop(): Promise<void>;
  /** rppd only: the first node's Prometheus metrics, as text. */
  metrics?(): Promise<string>;
}

export interface BenchSystem {
  readonly name: SystemName;
  /** Whether this system supports `ordered`. */
  readonly supportsOrdered: boolean;
  /** Tables holding queued events/jobs: emptied between W1 variants. */
  readonly queueTables: readonly string[];
  install(url: string, options?: InstallOptions): Promise<void>;
  start(url: string, options: StartOptions): Promise<RunningSystem>;
}

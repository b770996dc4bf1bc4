// The contract every runtime (Python, JS/TS) fulfils. Documented in docs/runtimes.md.

export type Lang = 'python' | 'js' | 'ts';

/** TRIG as the seed and the original number it. */
export type Trig = 0 | 1 | 2 | 3;
export const TRIG_OP = { 0: 'UPDATE', 1: 'INSERT', 2: 'DELETE', 3: 'TRUNCATE' } as const;
export type Op = (typeof TRIG_OP)[Trig];

/** What a runtime needs to know about a function (a row of rppd_function). */
export interface FunctionDef {
  id: number;
  lang: Lang;
  code: string;
  /** sha256 of code: code is compiled once per (id, codeHash). */
  codeHash: string;
  schemaTable: string;
  topic: string;
  timeoutMs: number;
  verboseDebug: boolean;
  fnLogging: boolean;
}

/** One event as a function sees it. */
export interface RunInput {
  /** rppd_event_queue.id, as a decimal string (bigint). */
  eventId: string;
  /** schema.table the event came from. */
  table: string;
  /** The function's topic as configured ('' / '.col' / a name). */
  topic: string;
  trig: Trig;
  op: Op;
  /** Topic column and primary-key columns with their values, e.g. { id: 5 }. */
  key: Record<string, unknown>;
  /** Primary-key values in key order (Python's PK tuple). */
  pk: unknown[];
  new: Record<string, unknown> | null;
  old: Record<string, unknown> | null;
}

/**
 * Why a run failed:
 * - function: the code raised/threw or returned a rejected promise
 * - compile: syntax error / module could not be loaded
 * - timeout: ran longer than timeoutMs, the worker was killed and replaced
 * - exit: the code exited the worker (sys.exit, os._exit, process.exit) or it crashed
 * - memory: the worker ran out of memory
 * - transient: the function's database connection failed (server restart, network): the run is retried
 * - internal: the runtime itself failed (e.g. the worker could not be started)
 */
export type FailureKind = 'function' | 'compile' | 'timeout' | 'exit' | 'memory' | 'transient' | 'internal';

export interface RunResult {
  ok: boolean;
  /** Captured print/console output, truncated to the runtime's output limit. */
  output: string;
  /** Set when ok is false: a clear, one-paragraph reason (plus code and input when verboseDebug). */
  error?: string;
  kind?: FailureKind;
  tookMs: number;
}

export interface RuntimeStats {
  /** Workers alive. */
  workers: number;
  /** Workers running a function now. */
  busy: number;
}

export interface RuntimeOptions {
  /** Connection string the functions' own DB connections use. */
  dbUrl: string;
  /** Upper bound of worker processes/threads (rppd_config.max_db_connections). */
  maxWorkers: number;
  /** Captured output beyond this many bytes is cut, with a note saying so. */
  outputLimitBytes: number;
  /** Memory cap of one worker (MiB). */
  memoryLimitMb: number;
  /** Directory for compiled artefacts (JS/TS modules). */
  cacheDir: string;
  /** Python interpreter; the Python runtime checks it can import psycopg2 or psycopg. */
  pythonPath?: string;
}

export interface Runtime {
  readonly langs: readonly Lang[];
  /** Never throws for function failures: they come back as { ok: false }. */
  run(fn: FunctionDef, input: RunInput): Promise<RunResult>;
  /** Live change of the worker cap (rppd_config.max_db_connections changed). */
  setMaxWorkers(n: number): void;
  /**
   * The node's functions now (all languages): get ready for their first runs (compile, load) in the
   * background and forget those gone. Failures show at the run.
   */
  prepare?(fns: readonly FunctionDef[]): void;
  stats(): RuntimeStats;
  /** Stop all workers; runs in progress end as failed 'internal' after graceMs. */
  close(graceMs?: number): Promise<void>;
}

// The JavaScript/TypeScript runtime: a pool of worker threads (jsWorker.ts) that run compiled
// function modules (compile.ts). Contract: ../runtime.ts and docs/runtimes.md.
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { describeError } from '../../util/errors.ts';
import type {
  FailureKind,
  FunctionDef,
  Lang,
  RunInput,
  RunResult,
  Runtime,
  RuntimeOptions,
  RuntimeStats,
} from '../runtime.ts';
import { bundleWorker, CompileError, compileFunction } from './compile.ts';
import { type FromWorker, locateInStack, OutputBuffer, type RunMessage, type WorkerConfig } from './jsWorker.ts';

export interface JsRuntimeOptions extends RuntimeOptions {
  /** Idle workers beyond the first are stopped after this long (default 60 s). */
  idleMs?: number;
  /** A worker crashed between runs (e.g. a stray timer threw after its run ended); it was replaced. */
  onWorkerError?: (message: string) => void;
}

export interface JsRuntime extends Runtime {
  /** Also counts runs waiting for a free worker. */
  stats(): RuntimeStats & { waiting: number };
}

/** How a run ended, before the runtime adds where it ran and the output. */
interface Outcome {
  ok: boolean;
  kind?: FailureKind;
  error?: string;
  location?: string;
  tookMs: number;
}

const STARTUP_TIMEOUT_MS = 60_000;
const SHUTDOWN_TIMEOUT_MS = 2_000;
// Node cannot unload a module: a worker that has loaded this many outdated versions of
// functions (code changed) is replaced, so that they do not pile up in its heap.
const MAX_SUPERSEDED_MODULES = 32;
// setTimeout fires at once for delays beyond a signed 32-bit number of milliseconds.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One worker thread and the run it is doing, if any. */
class WorkerHandle {
  readonly output: OutputBuffer;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  /** False once the thread crashed, exited or was told to stop. */
  alive = true;
  supersededModules = 0;
  private started = false;
  private lost = false;
  idleTimer: NodeJS.Timeout | undefined;
  private readonly thread: Worker;
  private current: { runId: number; startedAt: number; timer: NodeJS.Timeout; resolve(o: Outcome): void } | undefined;

  constructor(
    entryPath: string,
    dbUrl: string,
    outputLimitBytes: number,
    private readonly memoryLimitMb: number,
    /** Called once when the thread is gone; with a reason when it died between runs. */
    private readonly onLost: (handle: WorkerHandle, crash?: string) => void,
  ) {
    this.output = OutputBuffer.create(outputLimitBytes);
    const workerData: WorkerConfig = { rppdJsWorker: true, dbUrl, output: this.output.shared };
    this.thread = new Worker(entryPath, {
      workerData,
      // The bundled entry is plain JavaScript: the parent's loader flags (tsx) are not needed.
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: memoryLimitMb },
    });
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`the worker did not start within ${STARTUP_TIMEOUT_MS} ms`));
        this.stop();
      }, STARTUP_TIMEOUT_MS);
      this.thread.once('message', () => {
        this.started = true;
        clearTimeout(timer);
        resolve();
      });
      this.thread.once('exit', (code) => {
        clearTimeout(timer);
        if (!this.started) reject(new Error(`the worker exited with code ${code} while starting`));
      });
      this.thread.once('error', (err) => {
        clearTimeout(timer);
        if (!this.started) reject(err);
      });
    });
    this.ready.catch(() => undefined);
    this.exited = new Promise((resolve) => this.thread.once('exit', () => resolve()));
    this.thread.on('message', (message: FromWorker) => {
      if (message.type === 'result' && message.runId === this.current?.runId) {
        const { ok, kind, error, location, tookMs, supersededModules } = message;
        this.supersededModules = supersededModules;
        this.settle({ ok, kind, error, location, tookMs });
      }
    });
    // An uncaught exception or unhandled rejection ends the worker with 'error' then 'exit';
    // with a listener it never reaches the main process.
    this.thread.on('error', (err) => this.lose(this.describeCrash(err)));
    this.thread.on('exit', (code) => {
      this.lose({
        ok: false,
        kind: 'exit',
        error: `Exit: the function ended its worker with exit code ${code}`,
        tookMs: 0,
      });
    });
  }

  get busy(): boolean {
    return this.current !== undefined;
  }

  execute(message: RunMessage, timeoutMs: number): Promise<Outcome> {
    this.output.reset();
    return new Promise((resolve) => {
      const startedAt = performance.now();
      const limit = Math.min(Math.max(1, timeoutMs), MAX_TIMER_MS);
      const timer = setTimeout(() => {
        const error = `Timeout: ran longer than ${timeoutMs} ms (worker stopped)`;
        this.settle({ ok: false, kind: 'timeout', error, tookMs: this.elapsed() });
        this.stop();
      }, limit);
      this.current = { runId: message.runId, startedAt, timer, resolve };
      try {
        this.thread.postMessage(message);
      } catch (err) {
        const error = `cannot pass the event to the worker: ${describeError(err)}`;
        this.settle({ ok: false, kind: 'internal', error, tookMs: 0 });
      }
    });
  }

  /** Ends the run in progress, if any, with this outcome. */
  settle(outcome: Outcome): void {
    const current = this.current;
    if (!current) return;
    this.current = undefined;
    clearTimeout(current.timer);
    current.resolve(outcome);
  }

  stop(): void {
    this.alive = false;
    void this.thread.terminate();
  }

  /** Lets the worker end its database connection; kills it if it does not exit in time. */
  async shutdown(): Promise<void> {
    if (this.alive) {
      this.alive = false;
      this.thread.postMessage({ type: 'close' });
    }
    const timer = setTimeout(() => this.stop(), SHUTDOWN_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }

  private elapsed(): number {
    return this.current ? performance.now() - this.current.startedAt : 0;
  }

  private lose(outcome: Outcome): void {
    // 'error' is followed by 'exit': the first one tells what happened.
    if (this.lost) return;
    this.lost = true;
    const unexpected = this.alive && this.started && !this.current;
    this.alive = false;
    if (this.current) this.settle({ ...outcome, tookMs: this.elapsed() });
    const where = outcome.location ? `: ${outcome.location}` : '';
    this.onLost(this, unexpected ? `${outcome.error}${where}` : undefined);
  }

  private describeCrash(err: Error): Outcome {
    if ((err as { code?: unknown }).code === 'ERR_WORKER_OUT_OF_MEMORY') {
      const error = `OutOfMemory: used more than the worker's heap limit of ${this.memoryLimitMb} MiB (worker stopped)`;
      return { ok: false, kind: 'memory', error, tookMs: 0 };
    }
    const error = `${err.name}: ${err.message} (uncaught, from a stray callback or an unhandled rejection; worker replaced)`;
    return { ok: false, kind: 'exit', error, location: locateInStack(err.stack), tookMs: 0 };
  }
}

export function makeJsRuntime(options: JsRuntimeOptions): JsRuntime {
  const idleMs = options.idleMs ?? 60_000;
  let maxWorkers = Math.max(1, Math.floor(options.maxWorkers));
  let closed = false;
  let nextRunId = 1;
  let starting = 0;
  const handles = new Set<WorkerHandle>();
  /** Most recently used last: reuse it first, so the others can idle out. */
  const idle: WorkerHandle[] = [];
  const waiters: Array<{ resolve(handle: WorkerHandle): void; reject(err: Error): void }> = [];
  let entry: Promise<string> | undefined;
  const inFlight = new Set<Promise<RunResult>>();
  const starts = new Set<Promise<void>>();

  function workerEntry(): Promise<string> {
    if (!entry) {
      entry = bundleWorker(new URL('./jsWorker.ts', import.meta.url), options.cacheDir);
      entry.catch(() => {
        entry = undefined;
      });
    }
    return entry;
  }

  function forget(handle: WorkerHandle, crash?: string): void {
    if (crash !== undefined) options.onWorkerError?.(crash);
    handles.delete(handle);
    clearTimeout(handle.idleTimer);
    const at = idle.indexOf(handle);
    if (at >= 0) idle.splice(at, 1);
    pump();
  }

  async function startWorker(): Promise<WorkerHandle> {
    const handle = new WorkerHandle(
      await workerEntry(),
      options.dbUrl,
      options.outputLimitBytes,
      options.memoryLimitMb,
      forget,
    );
    await handle.ready;
    if (closed) {
      await handle.shutdown();
      throw new Error('the JS runtime is closed');
    }
    handles.add(handle);
    return handle;
  }

  /** Hands free workers to waiting runs in arrival order, starting workers while under the cap. */
  function pump(): void {
    while (waiters.length > 0 && !closed) {
      const free = idle.pop();
      if (free) {
        clearTimeout(free.idleTimer);
        waiters.shift()!.resolve(free);
        continue;
      }
      if (handles.size + starting >= maxWorkers) return;
      const waiter = waiters.shift()!;
      starting++;
      const start = startWorker().then(
        (handle) => {
          starting--;
          waiter.resolve(handle);
        },
        (err: unknown) => {
          starting--;
          waiter.reject(new Error(describeError(err)));
          pump();
        },
      );
      starts.add(start);
      void start.finally(() => starts.delete(start));
    }
  }

  function acquire(): Promise<WorkerHandle> {
    return new Promise((resolve, reject) => {
      if (closed) return reject(new Error('the JS runtime is closed'));
      waiters.push({ resolve, reject });
      pump();
    });
  }

  function release(handle: WorkerHandle): void {
    if (!handle.alive) {
      forget(handle);
    } else if (closed) {
      // close() shuts it down.
    } else if (handles.size > maxWorkers || handle.supersededModules >= MAX_SUPERSEDED_MODULES) {
      handle.stop();
      forget(handle);
    } else {
      idle.push(handle);
      handle.idleTimer = setTimeout(() => reapIdle(handle), idleMs);
      handle.idleTimer.unref();
      pump();
    }
  }

  function reapIdle(handle: WorkerHandle): void {
    if (!idle.includes(handle) || handles.size <= 1) return;
    handle.stop();
    forget(handle);
  }

  function failure(fn: FunctionDef, input: RunInput, outcome: Outcome, output: string): RunResult {
    const where = `${outcome.error} on run [${fn.schemaTable}]@${fn.topic}`;
    let error = outcome.location ? `${where}: ${outcome.location}` : where;
    if (fn.verboseDebug) error += `\n--- code ---\n${fn.code}\n--- input ---\n${inputJson(input)}`;
    return { ok: false, output, error, kind: outcome.kind ?? 'internal', tookMs: outcome.tookMs };
  }

  function run(fn: FunctionDef, input: RunInput): Promise<RunResult> {
    const running = runOnce(fn, input);
    inFlight.add(running);
    void running.finally(() => inFlight.delete(running));
    return running;
  }

  async function runOnce(fn: FunctionDef, input: RunInput): Promise<RunResult> {
    const fail = (kind: FailureKind, error: string, location?: string) =>
      failure(fn, input, { ok: false, kind, error, location, tookMs: 0 }, '');
    if (closed) return fail('internal', 'the JS runtime is closed');
    let path: string;
    try {
      path = await compileFunction(fn, options.cacheDir);
    } catch (err) {
      if (err instanceof CompileError) return fail('compile', err.message, err.location);
      return fail('internal', `cannot write the compiled function to ${options.cacheDir}: ${describeError(err)}`);
    }
    let handle: WorkerHandle;
    try {
      handle = await acquire();
    } catch (err) {
      return fail('internal', `cannot start a JS worker: ${describeError(err)}`);
    }
    try {
      const message: RunMessage = {
        type: 'run',
        runId: nextRunId++,
        path,
        fn: { id: fn.id, schemaTable: fn.schemaTable, topic: fn.topic },
        event: input,
      };
      const outcome = await handle.execute(message, fn.timeoutMs);
      // Read before release: the next run on this worker starts with an empty buffer.
      const output = handle.output.read();
      if (outcome.ok) return { ok: true, output, tookMs: outcome.tookMs };
      return failure(fn, input, outcome, output);
    } finally {
      release(handle);
    }
  }

  return {
    langs: ['js', 'ts'] as const satisfies readonly Lang[],
    run,
    setMaxWorkers(n: number): void {
      maxWorkers = Math.max(1, Math.floor(n));
      // Surplus idle workers go now; busy ones when their run ends (release).
      while (handles.size > maxWorkers && idle.length > 0) {
        const surplus = idle.shift()!;
        surplus.stop();
        forget(surplus);
      }
      pump();
    },
    stats() {
      const busy = [...handles].filter((h) => h.busy).length;
      return { workers: handles.size + starting, busy, waiting: waiters.length };
    },
    async close(graceMs = 5_000): Promise<void> {
      closed = true;
      for (const waiter of waiters.splice(0)) waiter.reject(new Error('the JS runtime is closed'));
      if (inFlight.size > 0) {
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, graceMs);
        });
        await Promise.race([Promise.all(inFlight), grace]);
        clearTimeout(timer);
      }
      const error = 'the JS runtime was closed while the function ran';
      for (const handle of handles) {
        clearTimeout(handle.idleTimer);
        handle.settle({ ok: false, kind: 'internal', error, tookMs: 0 });
      }
      await Promise.all(starts);
      await Promise.all([...handles].map((h) => h.shutdown()));
      handles.clear();
      idle.length = 0;
    },
  };
}

/** The event as JSON for verbose_debug messages; bigint values as strings. */
function inputJson(input: RunInput): string {
  try {
    return JSON.stringify(input, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value), 2);
  } catch (err) {
    return `(input not printable: ${describeError(err)})`;
  }
}

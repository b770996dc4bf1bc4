// The JavaScript/TypeScript runtime: a pool of worker threads (jsWorker.ts), one per core, each
// running several compiled function modules (compile.ts) at once. Contract: ../runtime.ts and docs/runtimes.md.
import { availableParallelism } from 'node:os';
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
import {
  CONTROL_CRASH_RUN,
  CONTROL_EXIT_RUN,
  CONTROL_WORDS,
  type FromWorker,
  locateInStack,
  OutputBuffer,
  type RunMessage,
  type ToWorker,
  type WorkerConfig,
} from './jsWorker.ts';

export interface JsRuntimeOptions extends RuntimeOptions {
  /** Worker threads at most (default os.availableParallelism()); runs are capped by maxWorkers. */
  maxThreads?: number;
  /** Start the threads at once instead of on the first runs (a node does: no cold start on its first events). */
  prewarm?: boolean;
  /** Idle workers beyond the first are stopped after this long (default 60 s). */
  idleMs?: number;
  /** A worker crashed between runs (e.g. a stray timer threw after its run ended); it was replaced. */
  onWorkerError?: (message: string) => void;
}

export interface JsRuntime extends Runtime {
  /** busy counts runs in progress; waiting counts runs waiting for a free run slot. */
  stats(): RuntimeStats & { waiting: number };
}

/** How a run ended, before the runtime adds where it ran. */
interface Outcome {
  ok: boolean;
  kind?: FailureKind;
  error?: string;
  location?: string;
  tookMs: number;
}

/** How a run ended, with its captured output. */
interface Finished extends Outcome {
  output: string;
}

const STARTUP_TIMEOUT_MS = 60_000;
const SHUTDOWN_TIMEOUT_MS = 2_000;
// Node cannot unload a module: a worker that has loaded this many outdated versions of
// functions (code changed) is replaced, so that they do not pile up in its heap.
const MAX_SUPERSEDED_MODULES = 32;
// setTimeout fires at once for delays beyond a signed 32-bit number of milliseconds.
const MAX_TIMER_MS = 2 ** 31 - 1;
// Young generation of a worker thread's heap. V8's default (~48 MiB per isolate, grown under
// load) made up a third of a draining node's resident memory; 8 MiB cost no measurable
// throughput in bench W6 (bench/README.md, finding 4).
const YOUNG_GENERATION_MB = 8;

/** A run in progress in a thread. */
interface Current {
  runId: number;
  slot: number;
  startedAt: number;
  timer: NodeJS.Timeout;
  resolve(finished: Finished): void;
}

/** One worker thread and the runs it is doing, each in a run slot (output buffer + DB connection). */
class WorkerHandle {
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  /** False once the thread crashed, exited or was told to stop. */
  alive = true;
  /** Takes no new runs: replaced once its runs end (too many outdated modules). */
  retiring = false;
  /** Runs assigned to this thread, including those not yet sent to it. */
  load = 0;
  supersededModules = 0;
  private started = false;
  private lost = false;
  idleTimer: NodeJS.Timeout | undefined;
  private readonly thread: Worker;
  private readonly control: Int32Array;
  private readonly outputs: OutputBuffer[] = [];
  private readonly freeSlots: number[] = [];
  private readonly runs = new Map<number, Current>();
  private outbox: RunMessage[] = [];
  /** Why the thread is being stopped (a run timed out): the other runs' failure message. */
  private stopReason: string | undefined;

  constructor(
    entryPath: string,
    dbUrl: string,
    private readonly outputLimitBytes: number,
    private readonly memoryLimitMb: number,
    /** Called once when the thread is gone; with a reason when it died with no run to blame. */
    private readonly onLost: (handle: WorkerHandle, crash?: string) => void,
  ) {
    const control = new SharedArrayBuffer(CONTROL_WORDS * 4);
    this.control = new Int32Array(control);
    const workerData: WorkerConfig = { rppdJsWorker: true, dbUrl, control };
    this.thread = new Worker(entryPath, {
      workerData,
      // The bundled entry is plain JavaScript: the parent's loader flags (tsx) are not needed.
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: memoryLimitMb, maxYoungGenerationSizeMb: YOUNG_GENERATION_MB },
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
      if (message.type !== 'results') return;
      for (const result of message.results) {
        this.supersededModules = result.supersededModules;
        const { ok, kind, error, location, tookMs } = result;
        this.settle(result.runId, { ok, kind, error, location, tookMs });
      }
    });
    // An uncaught exception or unhandled rejection ends the worker with 'error' then 'exit';
    // with a listener it never reaches the main process.
    this.thread.on('error', (err) => this.lose(this.describeCrash(err), Atomics.load(this.control, CONTROL_CRASH_RUN)));
    this.thread.on('exit', (code) => {
      const outcome: Outcome = {
        ok: false,
        kind: 'exit',
        error: `Exit: the function ended its worker with exit code ${code}`,
        tookMs: 0,
      };
      this.lose(outcome, Atomics.load(this.control, CONTROL_EXIT_RUN));
    });
  }

  /** Runs in progress in this thread. */
  get busy(): number {
    return this.runs.size;
  }

  execute(message: Omit<RunMessage, 'slot' | 'output'>, timeoutMs: number): Promise<Finished> {
    if (!this.alive) {
      const error = `Interrupted: ${this.stopReason ?? 'the worker stopped'} before the run began; the run is retried`;
      return Promise.resolve({ ok: false, kind: 'internal', error, tookMs: 0, output: '' });
    }
    let slot = this.freeSlots.pop();
    let output: SharedArrayBuffer | undefined;
    if (slot === undefined) {
      slot = this.outputs.length;
      const buffer = OutputBuffer.create(this.outputLimitBytes);
      this.outputs.push(buffer);
      output = buffer.shared;
    } else {
      this.outputs[slot]!.reset();
    }
    const runSlot = slot;
    return new Promise((resolve) => {
      const startedAt = performance.now();
      const limit = Math.min(Math.max(1, timeoutMs), MAX_TIMER_MS);
      const timer = setTimeout(() => {
        const error = `Timeout: ran longer than ${timeoutMs} ms (worker stopped)`;
        this.settle(message.runId, { ok: false, kind: 'timeout', error, tookMs: this.elapsed(message.runId) });
        this.interruptAll('another function in the same worker timed out');
      }, limit);
      this.runs.set(message.runId, { runId: message.runId, slot: runSlot, startedAt, timer, resolve });
      if (this.outbox.push({ ...message, slot: runSlot, output }) === 1) setImmediate(() => this.sendRuns());
    });
  }

  /** Runs started in this turn of the event loop go to the thread in one message (fewer wake-ups). */
  private sendRuns(): void {
    const runs = this.outbox;
    this.outbox = [];
    if (runs.length === 0) return;
    if (!this.alive) {
      // A lost thread has settled its runs already (settle ignores those); a stopped one has not.
      const error = `Interrupted: ${this.stopReason ?? 'the worker stopped'} before the run began; the run is retried`;
      for (const run of runs) this.settle(run.runId, { ok: false, kind: 'internal', error, tookMs: 0 });
      return;
    }
    try {
      this.thread.postMessage({ type: 'runs', runs } satisfies ToWorker);
    } catch (err) {
      const error = `cannot pass the event to the worker: ${describeError(err)}`;
      for (const run of runs) this.settle(run.runId, { ok: false, kind: 'internal', error, tookMs: 0 });
    }
  }

  /** Ends the run, if still in progress, with this outcome. */
  settle(runId: number, outcome: Outcome): void {
    const current = this.runs.get(runId);
    if (!current) return;
    this.runs.delete(runId);
    clearTimeout(current.timer);
    const output = this.outputs[current.slot]!.read();
    this.freeSlots.push(current.slot);
    current.resolve({ ...outcome, output });
  }

  /** Ends every run in progress with this outcome. */
  settleAll(outcome: Outcome): void {
    for (const runId of [...this.runs.keys()]) this.settle(runId, { ...outcome, tookMs: this.elapsed(runId) });
  }

  /** Stops the thread (the only way to stop a sync loop); its other runs fail as internal. */
  private interruptAll(reason: string): void {
    this.stopReason = reason;
    const error = `Interrupted: ${reason} (worker stopped); the run is retried`;
    this.settleAll({ ok: false, kind: 'internal', error, tookMs: 0 });
    this.stop();
  }

  stop(): void {
    this.alive = false;
    void this.thread.terminate();
  }

  /** Lets the worker end its database connections; kills it if it does not exit in time. */
  async shutdown(): Promise<void> {
    if (this.alive) {
      this.alive = false;
      this.thread.postMessage({ type: 'close' });
    }
    const timer = setTimeout(() => this.stop(), SHUTDOWN_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }

  private elapsed(runId: number): number {
    const current = this.runs.get(runId);
    return current ? performance.now() - current.startedAt : 0;
  }

  /**
   * The thread is gone. The run that caused it (culprit, told by the worker through shared
   * memory) gets the outcome; the others fail as internal (retried). When the culprit is not
   * known: a lone run gets the outcome, as does every run for out-of-memory; otherwise internal.
   */
  private lose(outcome: Outcome, culprit: number): void {
    // 'error' is followed by 'exit': the first one tells what happened.
    if (this.lost) return;
    this.lost = true;
    const expected = !this.alive || !this.started;
    this.alive = false;
    const where = outcome.location ? `: ${outcome.location}` : '';
    if (expected) {
      const error = `Interrupted: ${this.stopReason ?? 'the worker was stopped'}`;
      this.settleAll({ ok: false, kind: 'internal', error, tookMs: 0 });
      this.onLost(this);
      return;
    }
    let blamed: number | undefined;
    if (this.runs.has(culprit)) blamed = culprit;
    else if (culprit === 0 && this.runs.size === 1) blamed = [...this.runs.keys()][0];
    // Nobody to tell but the log: it died between runs, or from a run that already ended.
    const unexpected = blamed === undefined && (outcome.kind !== 'memory' || this.runs.size === 0);
    if (blamed !== undefined) this.settle(blamed, { ...outcome, tookMs: this.elapsed(blamed) });
    if (outcome.kind === 'memory') {
      this.settleAll(outcome);
    } else {
      const what = outcome.kind === 'exit' && !outcome.location ? 'exited' : 'crashed';
      const error = `Interrupted: another function in the same worker ${what} (${outcome.error}${where}); the run is retried`;
      this.settleAll({ ok: false, kind: 'internal', error, tookMs: 0 });
    }
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
  /** Runs assigned to a thread (in progress or about to be sent). */
  let active = 0;
  const handles = new Set<WorkerHandle>();
  const waiters: Array<{ resolve(handle: WorkerHandle): void; reject(err: Error): void }> = [];
  let entry: Promise<string> | undefined;
  const inFlight = new Set<Promise<RunResult>>();
  const starts = new Set<Promise<void>>();
  /** Compiled module path per function id, for the code hash it was compiled for. */
  const compiled = new Map<number, { codeHash: string; path: string }>();

  /** Threads: one per core, never more than the run cap. */
  const cores = Math.max(1, Math.floor(options.maxThreads ?? availableParallelism()));
  const threadCap = (): number => Math.max(1, Math.min(cores, maxWorkers));

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

  /** The thread taking new runs with the fewest runs. */
  function leastLoaded(): WorkerHandle | undefined {
    let best: WorkerHandle | undefined;
    for (const handle of handles) {
      if (!handle.alive || handle.retiring) continue;
      if (!best || handle.load < best.load) best = handle;
    }
    return best;
  }

  function assign(handle: WorkerHandle): void {
    clearTimeout(handle.idleTimer);
    handle.load++;
    active++;
  }

  /**
   * Hands waiting runs, in arrival order, to the least-loaded thread while under the run cap;
   * starts a thread while under the thread cap and every thread already has runs.
   */
  function pump(): void {
    while (waiters.length > 0 && !closed && active < maxWorkers) {
      const best = leastLoaded();
      let takers = 0;
      for (const handle of handles) if (handle.alive && !handle.retiring) takers++;
      // A starting thread will take one run: wait for it rather than pile runs on a busier one.
      const startingIsLess = starting > 0 && best !== undefined && best.load >= 1;
      if (best && (best.load === 0 || (takers + starting >= threadCap() && !startingIsLess))) {
        assign(best);
        waiters.shift()!.resolve(best);
        continue;
      }
      if (takers + starting >= threadCap()) return; // threads are starting: their ready calls pump
      const waiter = waiters.shift()!;
      starting++;
      active++;
      const start = startWorker().then(
        (handle) => {
          starting--;
          handle.load++;
          waiter.resolve(handle);
          pump();
        },
        (err: unknown) => {
          starting--;
          active--;
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
    handle.load--;
    active--;
    if (handle.supersededModules >= MAX_SUPERSEDED_MODULES) handle.retiring = true;
    if (!handle.alive) {
      // forget() was called when it was lost.
    } else if (closed) {
      // close() shuts it down.
    } else if (handle.load === 0 && (handle.retiring || handles.size > threadCap())) {
      handle.stop();
      forget(handle);
      return;
    } else if (handle.load === 0) {
      handle.idleTimer = setTimeout(() => reapIdle(handle), idleMs);
      handle.idleTimer.unref();
    }
    pump();
  }

  function reapIdle(handle: WorkerHandle): void {
    if (!handles.has(handle) || handle.load > 0 || handles.size <= 1) return;
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

  async function modulePath(fn: FunctionDef): Promise<string> {
    const known = compiled.get(fn.id);
    if (known?.codeHash === fn.codeHash) return known.path;
    const path = await compileFunction(fn, options.cacheDir);
    compiled.set(fn.id, { codeHash: fn.codeHash, path });
    return path;
  }

  async function runOnce(fn: FunctionDef, input: RunInput): Promise<RunResult> {
    const fail = (kind: FailureKind, error: string, location?: string) =>
      failure(fn, input, { ok: false, kind, error, location, tookMs: 0 }, '');
    if (closed) return fail('internal', 'the JS runtime is closed');
    let path: string;
    try {
      path = await modulePath(fn);
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
      const finished = await handle.execute(
        {
          type: 'run',
          runId: nextRunId++,
          path,
          fn: { id: fn.id, schemaTable: fn.schemaTable, topic: fn.topic },
          event: input,
        },
        fn.timeoutMs,
      );
      if (finished.ok) return { ok: true, output: finished.output, tookMs: finished.tookMs };
      return failure(fn, input, finished, finished.output);
    } finally {
      release(handle);
    }
  }

  if (options.prewarm) {
    for (let i = 0; i < threadCap(); i++) {
      starting++;
      const start = startWorker().then(
        () => {
          starting--;
          pump();
        },
        (err: unknown) => {
          starting--;
          if (!closed) options.onWorkerError?.(`could not start a JS worker ahead of time: ${describeError(err)}`);
          pump();
        },
      );
      starts.add(start);
      void start.finally(() => starts.delete(start));
    }
  }

  return {
    langs: ['js', 'ts'] as const satisfies readonly Lang[],
    run,
    setMaxWorkers(n: number): void {
      maxWorkers = Math.max(1, Math.floor(n));
      // Surplus idle threads go now; busy ones take no new runs and go when their runs end (release).
      let surplus = handles.size - threadCap();
      for (const handle of [...handles].sort((a, b) => a.load - b.load)) {
        if (surplus <= 0) break;
        surplus--;
        if (handle.load > 0) {
          handle.retiring = true;
          continue;
        }
        handle.stop();
        forget(handle);
      }
      pump();
    },
    stats() {
      let busy = 0;
      for (const handle of handles) busy += handle.busy;
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
        handle.settleAll({ ok: false, kind: 'internal', error, tookMs: 0 });
      }
      await Promise.all(starts);
      await Promise.all([...handles].map((h) => h.shutdown()));
      handles.clear();
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

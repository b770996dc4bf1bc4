// The JavaScript/TypeScript runtime: a pool of worker threads (workerHandle.ts, running
// jsWorker.ts), one per core, each running several compiled function modules (compile.ts) at
// once. Contract: ../runtime.ts and docs/runtimes.md.
import { availableParallelism } from 'node:os';
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
import { MAX_SUPERSEDED_MODULES, type Outcome, WorkerHandle } from './workerHandle.ts';

export interface JsRuntimeOptions extends RuntimeOptions {
  /** Worker threads at most (default os.availableParallelism()); runs are capped by maxWorkers. */
  maxThreads?: number;
  /** Start the threads at once instead of on the first runs (a node does: no cold start on its first events). */
  prewarm?: boolean;
  /** ctx.db.query prepares a statement its connection has run this many times (default 5; 0: never). */
  prepareThreshold?: number;
  /** Idle workers beyond the first are stopped after this long (default 60 s). */
  idleMs?: number;
  /** A worker crashed between runs (e.g. a stray timer threw after its run ended); it was replaced. */
  onWorkerError?: (message: string) => void;
}

export interface JsRuntime extends Runtime {
  /** busy counts runs in progress; waiting counts runs waiting for a free run slot. */
  stats(): RuntimeStats & { waiting: number };
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
      // Its share of the run slots gets connections before the first run needs one.
      Math.ceil(maxWorkers / threadCap()),
      options.prepareThreshold ?? 5,
      forget,
    );
    await handle.ready;
    for (const [fnId, { path }] of compiled) handle.preload(fnId, path);
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
    prepare(fns) {
      if (closed) return;
      // Threads started later preload what is in `compiled`: not functions that were deleted.
      const ids = new Set(fns.map((fn) => fn.id));
      for (const id of compiled.keys()) if (!ids.has(id)) compiled.delete(id);
      for (const fn of fns) {
        modulePath(fn).then(
          (path) => {
            for (const handle of handles) handle.preload(fn.id, path);
          },
          () => undefined, // the run reports it
        );
      }
    },
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

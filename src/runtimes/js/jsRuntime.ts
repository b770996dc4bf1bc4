// The JavaScript/TypeScript runtime: a pool of worker threads (workerHandle.ts, running
// jsWorker.ts), one per core, each running several compiled function modules (compile.ts) at
// once. Contract: ../runtime.ts and docs/runtimes.md.
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
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
import { type Finished, MAX_SUPERSEDED_MODULES, type Outcome, WorkerHandle } from './workerHandle.ts';

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
  /** Runs beyond the run slots may be sent ahead to the threads, one per slot (default true). */
  runAhead?: boolean;
}

/** Where a run is: its thread, and whether it waits there ahead or runs (it counts as `ahead` or `active`). */
interface Ticket {
  handle: WorkerHandle;
  state: 'ahead' | 'running';
}

export interface JsRuntime extends Runtime {
  /** busy counts runs in progress; waiting counts runs waiting for a free run slot (in this thread or sent ahead). */
  stats(): RuntimeStats & { waiting: number };
}

/** A run sent ahead that waited this long in its thread is started in a free slot elsewhere. */
const STALE_AHEAD_MS = 25;

export function makeJsRuntime(options: JsRuntimeOptions): JsRuntime {
  const idleMs = options.idleMs ?? 60_000;
  let maxWorkers = Math.max(1, Math.floor(options.maxWorkers));
  let closed = false;
  let nextRunId = 1;
  let starting = 0;
  /** Runs assigned to a thread (in progress or about to be sent). */
  let active = 0;
  /**
   * Runs sent ahead to a thread whose slots are all busy, at most one per run slot: the thread
   * starts each in the slot of its next run to end, without a round trip through the dispatcher
   * (a slot waited 0.70 ms between runs for a 1.47 ms run: bench/README.md, finding 23).
   */
  let ahead = 0;
  let staleTimer: NodeJS.Timeout | undefined;
  const handles = new Set<WorkerHandle>();
  const waiters: Array<{ resolve(ticket: Ticket): void; reject(err: Error): void }> = [];
  /** Where each run is (it may move while it waits ahead), by run id. */
  const tickets = new Map<number, Ticket>();
  let entry: Promise<string> | undefined;
  const inFlight = new Set<Promise<RunResult>>();
  const starts = new Set<Promise<void>>();
  /** Compiled module path per function id, for the code hash it was compiled for. */
  const compiled = new Map<number, { codeHash: string; path: string }>();

  /** Threads: one per core, never more than the run cap. */
  const cores = Math.max(1, Math.floor(options.maxThreads ?? availableParallelism()));
  const threadCap = (): number => Math.max(1, Math.min(cores, maxWorkers));
  const aheadCap = (): number => (options.runAhead === false ? 0 : maxWorkers);

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
    const share = Math.ceil(maxWorkers / threadCap());
    const handle = new WorkerHandle(
      await workerEntry(),
      options.dbUrl,
      options.outputLimitBytes,
      options.memoryLimitMb,
      // Its share of the run slots gets connections before the first run needs one.
      share,
      options.prepareThreshold ?? 5,
      forget,
      options.runAhead === false ? 0 : share,
      (runId) => {
        const ticket = tickets.get(runId);
        if (ticket?.state !== 'ahead') return;
        ticket.state = 'running';
        ahead--;
        active++;
      },
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

  /** The run goes to `handle`: to a free slot (running) or to wait there for one (ahead). */
  function assign(handle: WorkerHandle, state: Ticket['state'] = 'running'): Ticket {
    clearTimeout(handle.idleTimer);
    handle.load++;
    if (state === 'running') active++;
    else {
      ahead++;
      handle.reserveAhead();
    }
    return { handle, state };
  }

  /** The thread to send a run ahead to: the one with the fewest runs waiting there. */
  function aheadTarget(): WorkerHandle | undefined {
    let best: WorkerHandle | undefined;
    for (const handle of handles) {
      if (!handle.takesAhead) continue;
      if (!best || handle.waiting < best.waiting || (handle.waiting === best.waiting && handle.load < best.load)) {
        best = handle;
      }
    }
    return best;
  }

  /**
   * A run slot is free while a run has waited ahead in a thread for STALE_AHEAD_MS: that thread's
   * runs are long (or it is stuck in a loop). Take the oldest such run back and start it in a
   * free slot. Younger ones stay: their thread starts them as its runs end, and taking them back
   * on every free slot cost more messages than it saved (bench/README.md, finding 23).
   */
  function startStaleAhead(): boolean {
    const now = performance.now();
    let source: WorkerHandle | undefined;
    let oldest = Number.POSITIVE_INFINITY;
    for (const handle of handles) {
      const at = handle.oldestAhead;
      if (at !== undefined && at < oldest) {
        oldest = at;
        source = handle;
      }
    }
    if (!source) return false;
    if (now - oldest < STALE_AHEAD_MS) {
      // Look again when it has waited that long, unless runs end (pump) before.
      staleTimer ??= setTimeout(
        () => {
          staleTimer = undefined;
          pump();
        },
        STALE_AHEAD_MS - (now - oldest) + 1,
      );
      staleTimer.unref();
      return false;
    }
    const entry = source.takeBack();
    if (!entry) return false;
    const ticket = tickets.get(entry.message.runId);
    source.load--;
    ahead--;
    const target = leastLoaded();
    if (!target || !ticket) {
      entry.resolve(notStarted('no worker thread takes runs'));
      return true;
    }
    Object.assign(ticket, assign(target));
    void target.execute(entry.message, entry.timeoutMs).then(entry.resolve);
    return true;
  }

  /**
   * Hands waiting runs, in arrival order, to the least-loaded thread while under the run cap;
   * starts a thread while under the thread cap and every thread already has runs. At the cap,
   * sends runs ahead (up to one per run slot) to the threads that have room for them.
   */
  function pump(): void {
    while (!closed && active < maxWorkers && ahead > 0 && startStaleAhead()) {
      // a run stuck ahead came before the waiters
    }
    while (!closed && active >= maxWorkers && waiters.length > 0 && ahead < aheadCap()) {
      const target = aheadTarget();
      if (!target) break;
      waiters.shift()!.resolve(assign(target, 'ahead'));
    }
    while (waiters.length > 0 && !closed && active < maxWorkers) {
      const best = leastLoaded();
      let takers = 0;
      for (const handle of handles) if (handle.alive && !handle.retiring) takers++;
      // A starting thread will take one run: wait for it rather than pile runs on a busier one.
      const startingIsLess = starting > 0 && best !== undefined && best.load >= 1;
      if (best && (best.load === 0 || (takers + starting >= threadCap() && !startingIsLess))) {
        waiters.shift()!.resolve(assign(best));
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
          waiter.resolve({ handle, state: 'running' });
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

  function acquire(): Promise<Ticket> {
    return new Promise((resolve, reject) => {
      if (closed) return reject(new Error('the JS runtime is closed'));
      waiters.push({ resolve, reject });
      pump();
    });
  }

  function release(ticket: Ticket): void {
    const { handle } = ticket;
    handle.load--;
    if (ticket.state === 'running') active--;
    else ahead--;
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

  function notStarted(why: string): Finished {
    return {
      ok: false,
      kind: 'internal',
      error: `Interrupted: ${why} before the run began; the run is retried`,
      tookMs: 0,
      output: '',
    };
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
    let ticket: Ticket;
    try {
      ticket = await acquire();
    } catch (err) {
      return fail('internal', `cannot start a JS worker: ${describeError(err)}`);
    }
    const runId = nextRunId++;
    tickets.set(runId, ticket);
    try {
      const message = {
        type: 'run',
        runId,
        path,
        fn: { id: fn.id, schemaTable: fn.schemaTable, topic: fn.topic },
        event: input,
      } as const;
      const finished = await (ticket.state === 'ahead'
        ? ticket.handle.enqueue(message, fn.timeoutMs)
        : ticket.handle.execute(message, fn.timeoutMs));
      if (finished.ok) return { ok: true, output: finished.output, tookMs: finished.tookMs };
      return failure(fn, input, finished, finished.output);
    } finally {
      tickets.delete(runId);
      release(ticket);
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
      return { workers: handles.size + starting, busy, waiting: waiters.length + ahead };
    },
    async close(graceMs = 5_000): Promise<void> {
      closed = true;
      clearTimeout(staleTimer);
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

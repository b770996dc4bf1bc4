// The Python runtime: a pool of long-lived host.py worker processes (docs/runtimes.md).
// At most maxWorkers processes, started when needed; one run per worker; callers beyond that wait in FIFO order.
import { describeError } from '../../util/errors.ts';
import type { FunctionDef, RunInput, RunResult, Runtime, RuntimeOptions, RuntimeStats } from '../runtime.ts';
import { type FoundPython, findPython } from './findPython.ts';
import { PythonWorker } from './pythonWorker.ts';

/** Idle workers beyond the most recently used one exit after this long. */
const idleReapMs = 60_000;
/** A failed interpreter search is not repeated for every run. */
const findRetryMs = 10_000;
const startTimeoutMs = 60_000;

interface Waiter {
  resolve(worker: PythonWorker): void;
  reject(err: Error): void;
}

export function makePythonRuntime(options: RuntimeOptions): Runtime {
  let maxWorkers = sanitizeMax(options.maxWorkers);
  const workers = new Set<PythonWorker>();
  const busy = new Set<PythonWorker>();
  /** Most recently used last: taken from the end, reaped from the front. */
  const idle: PythonWorker[] = [];
  const waiters: Waiter[] = [];
  /** Workers being started, each already promised to a waiter. */
  const startups = new Set<Promise<void>>();
  const starting = new Set<PythonWorker>();
  let closing: Promise<void> | undefined;
  let python: { found: Promise<FoundPython>; failedAt?: number } | undefined;

  function findInterpreter(): Promise<FoundPython> {
    if (!python || (python.failedAt !== undefined && Date.now() - python.failedAt > findRetryMs)) {
      const entry: { found: Promise<FoundPython>; failedAt?: number } = { found: findPython(options.pythonPath) };
      entry.found.catch(() => {
        entry.failedAt = Date.now();
      });
      python = entry;
    }
    return python.found;
  }

  async function startWorker(): Promise<PythonWorker> {
    const found = await findInterpreter();
    const worker = new PythonWorker({
      pythonPath: found.path,
      driver: found.driver,
      dbUrl: options.dbUrl,
      memoryLimitMb: options.memoryLimitMb,
      outputLimitBytes: options.outputLimitBytes,
      startTimeoutMs,
    });
    // A worker that dies while idle (killed from outside) frees its slot for whoever waits.
    void worker.exited.then(() => {
      workers.delete(worker);
      const at = idle.indexOf(worker);
      if (at >= 0) idle.splice(at, 1);
      pump();
    });
    starting.add(worker);
    try {
      await worker.ready;
      return worker;
    } catch (err) {
      worker.kill('closed');
      throw err;
    } finally {
      starting.delete(worker);
    }
  }

  /** Hand free capacity to waiters in arrival order. */
  function pump(): void {
    while (waiters.length > 0 && !closing) {
      const worker = idle.pop();
      if (worker) {
        if (!worker.alive) continue; // died while idle; its exit handler removes it
        busy.add(worker);
        waiters.shift()!.resolve(worker);
        continue;
      }
      // A startup holds its slot from here until it settles; then the worker (if any) is in `workers`.
      if (workers.size + startups.size >= maxWorkers) return;
      const waiter = waiters.shift()!;
      const startup: Promise<void> = startWorker().then(
        (started) => {
          startups.delete(startup);
          if (closing || !started.alive) {
            started.kill('closed');
            waiter.reject(new Error(closing ? 'the Python runtime is closed' : 'the Python worker died at start'));
          } else {
            workers.add(started);
            busy.add(started);
            waiter.resolve(started);
          }
          pump();
        },
        (err: unknown) => {
          startups.delete(startup);
          waiter.reject(new Error(`cannot start a Python worker: ${describeError(err)}`));
          pump();
        },
      );
      startups.add(startup);
    }
  }

  function acquire(): Promise<PythonWorker> {
    return new Promise<PythonWorker>((resolve, reject) => {
      waiters.push({ resolve, reject });
      pump();
    });
  }

  function release(worker: PythonWorker): void {
    busy.delete(worker);
    if (!worker.alive) {
      workers.delete(worker);
    } else if (closing || workers.size > maxWorkers) {
      workers.delete(worker);
      void worker.stop();
    } else {
      worker.idleSince = Date.now();
      idle.push(worker);
    }
    pump();
  }

  const reaper = setInterval(() => {
    const now = Date.now();
    while (idle.length > 1 && now - idle[0]!.idleSince > idleReapMs) {
      const worker = idle.shift()!;
      workers.delete(worker);
      void worker.stop();
    }
  }, 5_000);
  reaper.unref();

  async function run(fn: FunctionDef, input: RunInput): Promise<RunResult> {
    if (closing) return failed(fn, input, 'internal', 'the Python runtime is closed');
    let worker: PythonWorker;
    try {
      worker = await acquire();
    } catch (err) {
      return failed(fn, input, 'internal', describeError(err));
    }
    try {
      const result = await worker.run(fn, input);
      return result.ok ? result : withDebug(fn, input, result);
    } catch (err) {
      return failed(fn, input, 'internal', `Python runtime: ${describeError(err)}`);
    } finally {
      release(worker);
    }
  }

  function setMaxWorkers(n: number): void {
    maxWorkers = sanitizeMax(n);
    // Busy workers above the new cap exit when their run ends (release); idle ones now.
    while (workers.size > maxWorkers && idle.length > 0) {
      const worker = idle.shift()!;
      workers.delete(worker);
      void worker.stop();
    }
    pump();
  }

  function stats(): RuntimeStats {
    return { workers: [...workers].filter((w) => w.alive).length, busy: busy.size };
  }

  async function closeAll(graceMs: number): Promise<void> {
    clearInterval(reaper);
    for (const waiter of waiters.splice(0)) waiter.reject(new Error('the Python runtime is closed'));
    for (const worker of idle.splice(0)) void worker.stop();
    // Runs in progress get graceMs to finish (release() then stops their workers); after that their
    // workers are killed and the runs end as 'internal'. Workers still starting are killed too.
    const deadline = setTimeout(() => {
      for (const worker of [...workers, ...starting]) worker.kill('closed');
    }, graceMs);
    deadline.unref();
    await Promise.allSettled([...startups]);
    await Promise.all([...workers].map((w) => w.exited));
    clearTimeout(deadline);
  }

  return {
    langs: ['python'] as const,
    run,
    setMaxWorkers,
    stats,
    close(graceMs = 5_000) {
      closing ??= closeAll(graceMs);
      return closing;
    },
  };
}

function sanitizeMax(n: number): number {
  // 0 would make every run wait forever: the cap is at least one worker.
  return Number.isFinite(n) && n >= 1 ? Math.floor(n) : 1;
}

function failed(fn: FunctionDef, input: RunInput, kind: 'internal', error: string): RunResult {
  return withDebug(fn, input, { ok: false, output: '', kind, error, tookMs: 0 });
}

/** verbose_debug: the code and the input follow the reason, as in the original. */
function withDebug(fn: FunctionDef, input: RunInput, result: RunResult): RunResult {
  if (!fn.verboseDebug) return result;
  let inputJson: string;
  try {
    inputJson = JSON.stringify(input);
  } catch {
    inputJson = String(input);
  }
  return { ...result, error: `${result.error ?? ''}\n--- code ---\n${fn.code}\n--- input ---\n${inputJson}` };
}

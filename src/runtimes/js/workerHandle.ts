// One worker thread of the JS runtime (jsRuntime.ts) and the runs it is doing: run slots (an
// output buffer and a database connection each), timeouts, and what a lost thread means for
// its runs. Runs and results cross to and from the thread once per event-loop turn.
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { describeError } from '../../util/errors.ts';
import type { FailureKind } from '../runtime.ts';
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
} from './workerProtocol.ts';

/** How a run ended, before the runtime adds where it ran. */
export interface Outcome {
  ok: boolean;
  kind?: FailureKind;
  error?: string;
  location?: string;
  tookMs: number;
}

/** How a run ended, with its captured output. */
export interface Finished extends Outcome {
  output: string;
}

const STARTUP_TIMEOUT_MS = 60_000;
const SHUTDOWN_TIMEOUT_MS = 2_000;
// Node cannot unload a module: a worker that has loaded this many outdated versions of
// functions (code changed) is replaced, so that they do not pile up in its heap.
export const MAX_SUPERSEDED_MODULES = 32;
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

/** A run sent ahead to a thread whose slots were all busy: the thread starts it when one frees. */
export interface Ahead {
  message: Omit<RunMessage, 'slot' | 'output' | 'ahead'>;
  timeoutMs: number;
  index: number;
  token: number;
  /** performance.now() when it was sent. */
  sentAt: number;
  resolve(finished: Finished): void;
}

/** One worker thread and the runs it is doing, each in a run slot (output buffer + DB connection). */
export class WorkerHandle {
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
  /** Runs sent ahead and not yet started, oldest first; their places in the claims words. */
  private readonly ahead = new Map<number, Ahead>();
  private readonly claims: Int32Array;
  private readonly freeClaims: number[];
  /** Places promised to runs assigned ahead and not yet enqueued. */
  private reserved = 0;
  /** Why the thread is being stopped (a run timed out): the other runs' failure message. */
  private stopReason: string | undefined;

  constructor(
    entryPath: string,
    dbUrl: string,
    private readonly outputLimitBytes: number,
    private readonly memoryLimitMb: number,
    preconnect: number,
    prepareThreshold: number,
    /** Called once when the thread is gone; with a reason when it died with no run to blame. */
    private readonly onLost: (handle: WorkerHandle, crash?: string) => void,
    /** Runs the thread may be sent ahead at once. */
    readonly aheadCapacity = 0,
    /** A run sent ahead was started by the thread (it counts as running from now on). */
    private readonly onAheadStarted: (runId: number) => void = () => undefined,
  ) {
    const control = new SharedArrayBuffer(CONTROL_WORDS * 4);
    this.control = new Int32Array(control);
    const claims = new SharedArrayBuffer(Math.max(1, aheadCapacity) * 4);
    this.claims = new Int32Array(claims);
    this.freeClaims = Array.from({ length: aheadCapacity }, (_, i) => aheadCapacity - 1 - i);
    const workerData: WorkerConfig = { rppdJsWorker: true, dbUrl, control, claims, preconnect, prepareThreshold };
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
        this.settle(result.runId, { ok, kind, error, location, tookMs }, result.output, result.next);
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

  /** Import a compiled function now, ahead of its first run here. */
  preload(fnId: number, path: string): void {
    if (this.alive && this.started) this.thread.postMessage({ type: 'preload', fnId, path } satisfies ToWorker);
  }

  execute(message: Omit<RunMessage, 'slot' | 'output'>, timeoutMs: number): Promise<Finished> {
    if (!this.alive) return Promise.resolve(this.notBegun());
    return new Promise((resolve) => this.begin(message, timeoutMs, resolve));
  }

  /** Runs sent ahead (or about to be: reserved) and not yet started. */
  get waiting(): number {
    return this.ahead.size + this.reserved;
  }

  /** When the oldest run sent ahead and not yet started was sent (performance.now()); undefined if none. */
  get oldestAhead(): number | undefined {
    for (const entry of this.ahead.values()) return entry.sentAt;
    return undefined;
  }

  /** Whether a run may be sent ahead now: the thread is alive and has room for it. */
  get takesAhead(): boolean {
    return this.alive && !this.retiring && this.freeClaims.length > this.reserved;
  }

  /**
   * Keeps a place for a run that will be sent ahead (enqueue), so that runs assigned in the same
   * turn never outnumber the places: the run is assigned at once, sent once its caller resumes.
   */
  reserveAhead(): void {
    this.reserved++;
  }

  /** Send a run ahead (after reserveAhead): the thread starts it in the slot of its next run to end (see RunMessage.ahead). */
  enqueue(message: Omit<RunMessage, 'slot' | 'output' | 'ahead'>, timeoutMs: number): Promise<Finished> {
    this.reserved = Math.max(0, this.reserved - 1);
    if (!this.alive) return Promise.resolve(this.notBegun());
    const index = this.freeClaims.pop();
    if (index === undefined) {
      // Not reserved (a bug): say so rather than blame the thread.
      const error = 'Interrupted: no place left in the thread for a run sent ahead; the run is retried';
      return Promise.resolve({ ok: false, kind: 'internal', error, tookMs: 0, output: '' });
    }
    // A token that differs from this place's previous ones: a stale copy in the thread never matches.
    const token = (message.runId % 0x3fffffff) + 1;
    Atomics.store(this.claims, index, token);
    return new Promise((resolve) => {
      this.ahead.set(message.runId, { message, timeoutMs, index, token, sentAt: performance.now(), resolve });
      if (this.outbox.push({ ...message, slot: -1, ahead: { index, token } }) === 1)
        setImmediate(() => this.sendRuns());
    });
  }

  /**
   * Takes back the oldest run sent ahead that the thread has not started, to start it elsewhere;
   * undefined when there is none (the thread may have just claimed it: it reports that).
   */
  takeBack(): Ahead | undefined {
    for (const entry of this.ahead.values()) if (this.withdraw(entry)) return entry;
    return undefined;
  }

  /** Takes a run sent ahead back unless the thread claimed it first: true when taken. */
  private withdraw(entry: Ahead): boolean {
    if (Atomics.compareExchange(this.claims, entry.index, entry.token, 0) !== entry.token) return false;
    this.forgetAhead(entry);
    return true;
  }

  private forgetAhead(entry: Ahead): void {
    this.ahead.delete(entry.message.runId);
    this.freeClaims.push(entry.index);
  }

  private notBegunError(): string {
    return `Interrupted: ${this.stopReason ?? 'the worker stopped'} before the run began; the run is retried`;
  }

  private notBegun(): Finished {
    return { ok: false, kind: 'internal', error: this.notBegunError(), tookMs: 0, output: '' };
  }

  /** A run sent ahead that the thread claimed: it runs in `slot` from now on. */
  private promote(runId: number, slot: number): void {
    const entry = this.ahead.get(runId);
    if (!entry) return;
    Atomics.store(this.claims, entry.index, 0);
    this.forgetAhead(entry);
    this.track(entry.message.runId, slot, entry.timeoutMs, entry.resolve);
    this.onAheadStarted(runId);
  }

  private begin(message: Omit<RunMessage, 'slot' | 'output'>, timeoutMs: number, resolve: (f: Finished) => void): void {
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
    this.track(message.runId, slot, timeoutMs, resolve);
    if (this.outbox.push({ ...message, slot, output }) === 1) setImmediate(() => this.sendRuns());
  }

  /** The run is in progress in `slot`: its timeout runs from now. */
  private track(runId: number, slot: number, timeoutMs: number, resolve: (f: Finished) => void): void {
    const startedAt = performance.now();
    const limit = Math.min(Math.max(1, timeoutMs), MAX_TIMER_MS);
    const timer = setTimeout(() => {
      const error = `Timeout: ran longer than ${timeoutMs} ms (worker stopped)`;
      this.settle(runId, { ok: false, kind: 'timeout', error, tookMs: this.elapsed(runId) });
      this.interruptAll('another function in the same worker timed out');
    }, limit);
    this.runs.set(runId, { runId, slot, startedAt, timer, resolve });
  }

  /** Runs started in this turn of the event loop go to the thread in one message (fewer wake-ups). */
  private sendRuns(): void {
    const runs = this.outbox;
    this.outbox = [];
    if (runs.length === 0) return;
    if (!this.alive) {
      // A lost thread has settled its runs already (settle ignores those); a stopped one has not.
      const error = this.notBegunError();
      for (const run of runs) this.settle(run.runId, { ok: false, kind: 'internal', error, tookMs: 0 });
      this.settleAhead(error);
      return;
    }
    try {
      this.thread.postMessage({ type: 'runs', runs } satisfies ToWorker);
    } catch (err) {
      const error = `cannot pass the event to the worker: ${describeError(err)}`;
      for (const run of runs) {
        this.settle(run.runId, { ok: false, kind: 'internal', error, tookMs: 0 });
        const entry = run.ahead ? this.ahead.get(run.runId) : undefined;
        if (entry && this.withdraw(entry)) entry.resolve({ ok: false, kind: 'internal', error, tookMs: 0, output: '' });
      }
    }
  }

  /**
   * Ends the run, if still in progress, with this outcome. `output` when the thread read it
   * (it gave the slot to `next`, a run sent ahead, which runs in it from now on).
   */
  settle(runId: number, outcome: Outcome, output?: string, next?: number): void {
    const current = this.runs.get(runId);
    if (!current) return;
    this.runs.delete(runId);
    clearTimeout(current.timer);
    const text = output ?? this.outputs[current.slot]!.read();
    if (next !== undefined && this.ahead.has(next)) this.promote(next, current.slot);
    else this.freeSlots.push(current.slot);
    current.resolve({ ...outcome, output: text });
  }

  /** Ends every run in progress with this outcome; runs sent ahead that did not start are retried. */
  settleAll(outcome: Outcome): void {
    this.claimedAheadAreRunning();
    for (const runId of [...this.runs.keys()]) this.settle(runId, { ...outcome, tookMs: this.elapsed(runId) });
    this.settleAhead(this.notBegunError());
  }

  /** Runs sent ahead that the thread claimed before its report of it arrived: they are running. */
  private claimedAheadAreRunning(): void {
    for (const entry of [...this.ahead.values()]) {
      if (Atomics.load(this.claims, entry.index) !== -entry.token) continue;
      const slot = this.outputs.length;
      // Its slot is unknown here; its output is lost with the thread.
      this.outputs.push(OutputBuffer.create(0));
      this.promote(entry.message.runId, slot);
    }
  }

  /** Runs sent ahead and not started end as not begun (the dispatcher runs them again). */
  private settleAhead(error: string): void {
    for (const entry of [...this.ahead.values()]) {
      if (this.withdraw(entry)) entry.resolve({ ok: false, kind: 'internal', error, tookMs: 0, output: '' });
    }
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
    this.claimedAheadAreRunning();
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

// The master's loop: read committed events in capture order, plan their runs,
// keep topic order (scheduler.ts), hand ready runs to an executor, and hand
// finished ones to the completer. The table is the truth: a new master starts
// from an empty memory and re-reads everything still in rppd_event_queue.
import type pg from 'pg';
import type { EventRow } from '../db/queries/events.ts';
import { notifyLockBusy, readEventsAfter } from '../db/queries/events.ts';
import { SqlState } from '../db/sqlState.ts';
import type { AdmittedVia, NodeEvents } from '../events/nodeEvents.ts';
import type { RunResult } from '../runtimes/runtime.ts';
import { backoffMs, delay } from '../util/backoff.ts';
import { coerceError, errorMessage } from '../util/errors.ts';
import type { Completer } from './completer.ts';
import type { FunctionRegistry } from './functionRegistry.ts';
import { makeLateCommits } from './lateCommits.ts';
import { makeListenLock } from './listenLock.ts';
import { type PlannedRun, planRuns, trigValue } from './planRuns.ts';
import { type SchedRun, Scheduler } from './scheduler.ts';
import { WakeMode, type WakeModeOptions } from './wakeMode.ts';

export interface RunExecutor {
  /** How many more runs may start now. */
  freeSlots(): number;
  /** Runs one function for one event somewhere; resolves with its result, never rejects. */
  execute(run: PlannedRun): Promise<RunResult & { nodeId: number }>;
}

export interface DispatcherOptions {
  pool: pg.Pool;
  schema: string;
  registry: FunctionRegistry;
  executor: RunExecutor;
  completer: Completer;
  events: NodeEvents;
  /** Events held in memory at most (the rest wait in the table). */
  windowSize?: number;
  /** Poll interval while events arrive fast (writers send no NOTIFY then). */
  awakePollMs?: number;
  /** The event rates at which writers stop and start sending NOTIFY (wakeMode.ts). */
  wakeMode?: WakeModeOptions;
  /** Fallback poll while writers NOTIFY (a NOTIFY can be lost on reconnect). */
  pollMs: number;
  /** How often ids at or below the cursor are re-read to catch events that committed late. */
  sweepMs?: number;
  /** Attempts of a run that keeps failing on a database connection error. */
  maxAttempts: number;
}

export interface Dispatcher {
  start(): void;
  /** A hint that new events may be there (NOTIFY). */
  wake(): void;
  /** How many events written in this process offer() would admit now (0 while the loop is behind the table). */
  room(): number;
  /**
   * `count` events this process just committed to the queue (WAL capture), and `rows`, them as
   * the loop would read them: admitted at once when all are there and room() allows, else
   * left to the loop's next read (and later ones too, until a read reaches the table's end).
   */
  offer(rows: EventRow[], count: number): void;
  /** The executor has more free slots (a node joined or came back): start what is ready. */
  pump(): void;
  /** Stop reading; wait up to graceMs for running runs; write what finished. */
  stop(graceMs: number): Promise<void>;
  stats(): {
    admitted: number;
    queued: number;
    running: number;
    writersNotify: boolean | null;
    /** The sweeps so far, the id above which they read now, and how long that floor has waited to move. */
    sweep: { runs: number; floor: string; floorWaitSec: number };
  };
}

type Payload = PlannedRun & { attempt: number; lastError?: string };

/** admit()'s `readAfter` for events offered as written: below every cursor. */
const FRESH = '-1';

export function makeDispatcher(options: DispatcherOptions): Dispatcher {
  const { pool, schema, registry, executor, completer, events } = options;
  // ~1 s of work at full speed: enough to keep every slot busy, small enough that the events
  // held do not pile up in the old generation of the heap (bench W6 peak RSS).
  const windowSize = options.windowSize ?? 2000;
  // While events arrive fast the table is polled every 2 ms and writers send no NOTIFY.
  const awakePollMs = options.awakePollMs ?? 2;
  const wakeMode = new WakeMode(options.wakeMode);
  const sweepMs = options.sweepMs ?? 1000;

  // Events in memory; for schedule-made events, the schedule and the first failure.
  const admitted = new Map<string, { cronId: number | null; error: string | null }>();
  const scheduler = new Scheduler<Payload>((job) => {
    const info = admitted.get(job.id);
    completer.eventDone(job.id);
    if (info?.cronId != null) completer.cronDone(info.cronId, info.error);
  });
  let cursor = '0';
  // The last read reached the end of the table with room to spare: events written in this process
  // may be admitted without a read. Until then (a new master, a full window) the loop reads them.
  let caughtUp = false;
  // Offers left to the loop so far: a read that was under way when one was left does not catch up.
  let leftToRead = 0;
  let running = 0;
  let stopped = false;
  let sleeping: boolean | null = null;
  const late = makeLateCommits({
    pool,
    schema,
    windowSize,
    sweepMs,
    known: (id) => admitted.has(id) || completer.isPending(id),
    admit: (rows, via) => admit(rows, via),
  });
  let wakeUp: (() => void) | null = null;
  // A signal while the loop was reading: the next wait returns at once (a NOTIFY is never lost).
  let signalled = false;
  let loopDone: Promise<void> = Promise.resolve();
  let idleWaiters: (() => void)[] = [];

  function signal(): void {
    const w = wakeUp;
    wakeUp = null;
    if (w) w();
    else signalled = true;
  }

  function waitSignal(ms: number): Promise<void> {
    if (signalled) {
      signalled = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        wakeUp = null;
        resolve();
      }, ms);
      wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  // One admission at a time, in call order: the loop's reads and the events offered by WAL
  // capture interleave, and each awaits the registry before it schedules (topic order).
  let admitting: Promise<void> = Promise.resolve();
  function admit(rows: EventRow[], via: AdmittedVia, readAfter?: string): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    const next = admitting.then(() => admitNow(rows, via, readAfter));
    admitting = next.catch(() => undefined);
    return next;
  }

  /**
   * `readAfter`: the rows come from a read after that cursor, or were just written here (offer:
   * `FRESH`). Once the cursor is past it, rows at or below the cursor came in another way
   * meanwhile (and may have run and left memory already): they are taken only if noted as
   * skipped (lateCommits.ts), so that no event runs twice. The sweep still finds any left out.
   */
  async function admitNow(rows: EventRow[], via: AdmittedVia, readAfter?: string): Promise<void> {
    if (readAfter !== undefined && BigInt(cursor) > BigInt(readAfter)) {
      const moved = BigInt(cursor);
      rows = rows.filter((r) => BigInt(r.id) > moved || late.isWatched(r.id));
      if (rows.length === 0) return;
    }
    // Functions changed in or before the snapshot that read these events must be known first.
    await registry.ensureVersion(rows.reduce((max, r) => (BigInt(r.fv) > max ? BigInt(r.fv) : max), 0n));
    const pks = await registry.pkColumns(new Set(rows.map((r) => r.schema_table)));
    let added = 0;
    for (const row of rows) {
      if (admitted.has(row.id) || completer.isPending(row.id)) continue;
      added++;
      admitted.set(row.id, { cronId: row.cron_id, error: null });
      const runs = planRuns(row, registry.forTable(row.schema_table), pks.get(row.schema_table) ?? []);
      scheduler.add(
        row.id,
        runs.map((r) => ({ queueKey: r.queueKey, ordered: r.ordered, payload: { ...r, attempt: row.attempts } })),
      );
    }
    const last = rows[rows.length - 1]!.id;
    if (BigInt(last) > BigInt(cursor)) {
      late.noteSkipped(cursor, rows);
      cursor = last;
    }
    events.emit('events:admitted', { count: added, lastId: last, via });
    pump();
  }

  function pump(): void {
    if (stopped) return;
    const free = executor.freeSlots();
    if (free <= 0) return;
    for (const run of scheduler.take(free)) void execute(run);
  }

  async function execute(run: SchedRun<Payload>): Promise<void> {
    const p = run.payload;
    running++;
    const startedAt = new Date();
    events.emit('run:started', { eventId: p.input.eventId, fnId: p.fn.id, nodeId: -1 });
    let result: RunResult & { nodeId: number };
    try {
      result = await executor.execute(p);
    } catch (err) {
      result = { ok: false, kind: 'internal', error: errorMessage(err), output: '', tookMs: 0, nodeId: -1 };
    }
    running--;
    p.attempt++;
    if (
      !result.ok &&
      (result.kind === 'transient' || result.kind === 'internal') &&
      p.attempt < options.maxAttempts &&
      !stopped
    ) {
      const wait = backoffMs(p.attempt, 250, 10_000);
      p.lastError = result.error;
      events.emit('run:retry', {
        eventId: p.input.eventId,
        fnId: p.fn.id,
        attempt: p.attempt,
        delayMs: wait,
        error: result.error ?? '',
      });
      // Recorded so that a later master counts on from here rather than from 0.
      completer.retried(p.input.eventId, p.attempt, result.error ?? 'failed');
      setTimeout(() => {
        scheduler.putBack(run);
        pump();
      }, wait).unref();
      pump();
      return;
    }
    if (!result.ok && (result.kind === 'transient' || result.kind === 'internal') && stopped) {
      // Shutting down: leave the event in the table; the next master runs it again.
      finishWithoutRecord(run);
      return;
    }
    if (!result.ok) {
      const info = admitted.get(p.input.eventId);
      if (info && info.error === null) info.error = result.error ?? 'failed';
    }
    if (p.fn.fnLogging || !result.ok) {
      const error = result.ok
        ? null
        : p.attempt > 1 && (result.kind === 'transient' || result.kind === 'internal')
          ? `${result.error} (gave up after ${p.attempt} attempts)`
          : (result.error ?? 'failed');
      completer.log({
        node_id: result.nodeId,
        fn_id: p.fn.id,
        trig_value: trigValue(p),
        trig_type: p.input.trig,
        started_at: startedAt.toISOString(),
        took_ms: Math.round(result.tookMs),
        output: result.output,
        error_msg: error,
        event_id: p.input.eventId,
      });
    }
    events.emit('run:finished', {
      eventId: p.input.eventId,
      fnId: p.fn.id,
      ok: result.ok,
      kind: result.kind,
      error: result.error,
      tookMs: result.tookMs,
      attempt: p.attempt,
    });
    scheduler.finish(run);
    if (run.job.step < run.job.runs.length) completer.fnDone(p.input.eventId, p.fn.id);
    pump();
    if (running === 0) for (const w of idleWaiters.splice(0)) w();
  }

  // Shutdown only: forget the run without writing, so the event stays in the table.
  function finishWithoutRecord(run: SchedRun<Payload>): void {
    admitted.delete(run.job.id);
    if (running === 0) for (const w of idleWaiters.splice(0)) w();
  }

  // Writers NOTIFY only while the master holds the listen lock (listenLock.ts).
  const listenLock = makeListenLock(pool, schema, (error) => {
    sleeping = null;
    events.emit('db:error', { where: 'listen lock connection (writers stop notifying; polling)', error });
    signal();
  });

  /** false: the lock could not be taken yet (writers send no NOTIFY), keep polling. */
  async function setSleeping(value: boolean): Promise<boolean> {
    if (sleeping === value) return true;
    if (!value) await listenLock.drop();
    else if (!(await listenLock.hold())) return false;
    sleeping = value;
    events.emit('dispatch:wake-mode', { mode: value ? 'notify' : 'poll', why: wakeMode.reason });
    return true;
  }

  // A database that hides pg_locks from this role leaves the rate and the backlog to decide.
  let lockUnreadable = false;
  async function sampleNotifyLock(): Promise<void> {
    if (lockUnreadable) return;
    try {
      wakeMode.noteLock(Date.now(), await notifyLockBusy(pool));
    } catch (err) {
      // Any other error (a restart) skips one sample; the next read reports it if it lasts.
      if ((err as { code?: unknown }).code !== SqlState.insufficientPrivilege) return;
      lockUnreadable = true;
      events.emit('db:error', { where: 'reading pg_locks for the wake mode (now off)', error: coerceError(err) });
    }
  }

  async function loop(): Promise<void> {
    let failures = 0;
    while (!stopped) {
      try {
        const room = windowSize - admitted.size;
        const limit = Math.min(room, 1000);
        let full = room <= 0;
        if (room > 0) {
          const left = leftToRead;
          const from = cursor;
          const rows = await readEventsAfter(pool, schema, from, limit);
          full = rows.length === limit;
          wakeMode.note(Date.now(), rows.length, full);
          await admit(rows, 'read', from);
          // Events left to read while this read was under way may have committed after its snapshot.
          caughtUp = !full && left === leftToRead;
        } else {
          caughtUp = false;
          wakeMode.note(Date.now(), 0, true);
        }
        if (late.watching) await late.rereadSkipped();
        await late.sweepIfDue(cursor);
        failures = 0;
        if (stopped) break;
        if (wakeMode.wantsSample(Date.now())) await sampleNotifyLock();
        if (wakeMode.decide(Date.now()) === 'poll') {
          if (sleeping !== false) await setSleeping(false);
          if (room > 0 && full) continue;
          // No room: finished events signal once half the window is free.
          await waitSignal(room <= 0 ? options.pollMs : awakePollMs);
        } else if (sleeping !== true) {
          // Once the lock is held writers NOTIFY: read once more to close the gap. Until then, poll.
          if (!(await setSleeping(true))) await waitSignal(awakePollMs);
        } else {
          // Ids skipped by a read belong to transactions that may commit without a NOTIFY.
          await waitSignal(late.watching > 0 ? awakePollMs : options.pollMs);
        }
      } catch (err) {
        const error = coerceError(err);
        events.emit('db:error', { where: 'dispatch', error });
        await delay(backoffMs(failures++));
      }
    }
  }

  // Finished events leave memory once their deletion is committed.
  const onCompleted = ({ ids }: { ids: string[] }) => {
    for (const id of ids) admitted.delete(id);
    if (admitted.size < windowSize / 2) signal();
  };

  return {
    start() {
      events.on('events:completed', onCompleted);
      loopDone = loop();
    },
    wake() {
      signal();
    },
    room() {
      return caughtUp && !stopped ? Math.max(0, windowSize - admitted.size) : 0;
    },
    offer(rows, count) {
      if (count === 0 || stopped) return;
      if (!caughtUp || rows.length < count || admitted.size + rows.length > windowSize) {
        // Left in the table: the loop reads from its cursor, which has not moved past them.
        caughtUp = false;
        leftToRead++;
        signal();
        return;
      }
      // Ids between the cursor and these (another writer's events, not yet read) become gaps
      // that the loop reads at once (lateCommits.ts); the sweep catches anything later still.
      admit(rows, 'handover', FRESH).then(
        () => {
          if (late.watching) signal();
        },
        (err: unknown) => {
          caughtUp = false;
          leftToRead++;
          events.emit('db:error', { where: 'dispatch (admitting written events)', error: coerceError(err) });
          signal();
        },
      );
    },
    async stop(graceMs) {
      stopped = true;
      signal();
      await loopDone;
      await listenLock.drop();
      if (running > 0) {
        await Promise.race([new Promise<void>((r) => idleWaiters.push(r)), delay(graceMs)]);
      }
      await completer.flush();
      events.off('events:completed', onCompleted);
      idleWaiters = [];
    },
    pump,
    stats() {
      const s = scheduler.size;
      return {
        admitted: admitted.size,
        queued: s.jobs - s.running,
        running,
        writersNotify: sleeping,
        sweep: late.stats(),
      };
    },
  };
}

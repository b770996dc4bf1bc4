// Batches what finished runs must write: log rows, functions done for events that
// still have others to run, and the deletion of finished events. One transaction
// per batch; while one batch is being written the next one collects. A batch of
// deletions alone (the usual case) is one statement with the fence inside it.
import type pg from 'pg';
import { inTransaction } from '../db/pool.ts';
import { finishCrons } from '../db/queries/cron.ts';
import { addDoneFunctions, deleteEvents, deleteEventsFenced, recordAttempts } from '../db/queries/events.ts';
import { insertLogs, type LogRow } from '../db/queries/logs.ts';
import { holdsLease } from '../db/queries/nodes.ts';
import { backoffMs, delay } from '../util/backoff.ts';
import { coerceError } from '../util/errors.ts';

export interface Completer {
  log(row: LogRow): void;
  fnDone(eventId: string, fnId: number): void;
  eventDone(eventId: string): void;
  /** A run of the event failed on a transient error and will be retried: its count and reason. */
  retried(eventId: string, attempts: number, error: string): void;
  /** A schedule's firing finished (error = the failure of one of its runs, or null). */
  cronDone(cronId: number, error: string | null): void;
  /** Event ids whose deletion is not yet committed. */
  isPending(eventId: string): boolean;
  /** Resolves once everything handed over so far is written. */
  flush(): Promise<void>;
  pendingCount(): number;
}

export interface CompleterOptions {
  pool: pg.Pool;
  schema: string;
  onError: (err: Error) => void;
  onFlushed: (events: string[]) => void;
  /** Write only while this node holds the master lease of this epoch (the cluster's fence). */
  fence?: { nodeId: number; epoch: string };
}

// Strings in jsonb may not contain NUL; output is user data.
function clean(text: string | null): string | null {
  return text === null ? null : text.replaceAll('\u0000', '\\u0000');
}

/** Thrown by a fence: this node may no longer write as master. The batch is dropped, not retried. */
export class Fenced extends Error {
  override name = 'Fenced';
}

const HOLD_MS = 10;
const FULL_BATCH = 256;

export function makeCompleter(options: CompleterOptions): Completer {
  const { fence } = options;
  const fenced = () =>
    new Fenced(`epoch ${fence?.epoch} no longer holds the lease: its unwritten results are left to the next master`);
  let logs: LogRow[] = [];
  let done = new Map<string, number[]>();
  let retries = new Map<string, { attempts: number; error: string }>();
  let deletes: string[] = [];
  let crons: { id: number; error: string | null }[] = [];
  const pendingDelete = new Set<string>();
  let writing: Promise<void> | null = null;
  let retry = false;
  let failures = 0;
  let holdTimer: NodeJS.Timeout | undefined;
  let flushing = 0;
  const waiting = () => logs.length + done.size + retries.size + deletes.length + crons.length;

  // Every batch is a commit: a small one waits up to HOLD_MS for more (bench P: without it,
  // 6 events per commit while draining a backlog).
  function schedule(): void {
    if (writing) return; // its end schedules what came meanwhile
    if (flushing === 0 && waiting() < FULL_BATCH) {
      holdTimer ??= setTimeout(write, HOLD_MS);
      return;
    }
    write();
  }

  function write(): void {
    clearTimeout(holdTimer);
    holdTimer = undefined;
    if (writing) return;
    writing = (async () => {
      do {
        retry = false;
        await writeBatch();
      } while (retry || waiting() >= FULL_BATCH || (flushing > 0 && waiting() > 0));
    })().finally(() => {
      writing = null;
      if (waiting() > 0) schedule();
    });
  }

  async function writeBatch(): Promise<void> {
    const batchLogs = logs;
    const batchDone = done;
    const batchRetries = retries;
    const batchDeletes = deletes;
    const batchCrons = crons;
    logs = [];
    done = new Map();
    retries = new Map();
    deletes = [];
    crons = [];
    if (!batchLogs.length && !batchDone.size && !batchRetries.size && !batchDeletes.length && !batchCrons.length)
      return;
    try {
      if (fence && !batchLogs.length && !batchDone.size && !batchRetries.size && !batchCrons.length) {
        if (!(await deleteEventsFenced(options.pool, options.schema, batchDeletes, fence)).held) throw fenced();
      } else
        await inTransaction(options.pool, async (client) => {
          if (fence && !(await holdsLease(client, options.schema, fence.nodeId, fence.epoch))) throw fenced();
          await insertLogs(
            client,
            options.schema,
            batchLogs.map((l) => ({ ...l, output: clean(l.output), error_msg: clean(l.error_msg) })),
          );
          const deleting = new Set(batchDeletes);
          await addDoneFunctions(
            client,
            options.schema,
            [...batchDone].filter(([id]) => !deleting.has(id)).map(([id, fns]) => ({ id, fns })),
          );
          await recordAttempts(
            client,
            options.schema,
            [...batchRetries].filter(([id]) => !deleting.has(id)).map(([id, r]) => ({ id, ...r })),
          );
          await deleteEvents(client, options.schema, batchDeletes);
          await finishCrons(client, options.schema, batchCrons);
        });
      failures = 0;
      for (const id of batchDeletes) pendingDelete.delete(id);
      options.onFlushed(batchDeletes);
    } catch (err) {
      if (err instanceof Fenced) {
        // Another master took over: it re-reads these events and runs them again.
        for (const id of batchDeletes) pendingDelete.delete(id);
        options.onError(err);
        return;
      }
      // Nothing is lost: the batch goes back in front and is written on the next try.
      options.onError(new Error('writing finished runs failed; will retry', { cause: coerceError(err) }));
      logs = batchLogs.concat(logs);
      for (const [id, fns] of done) batchDone.set(id, [...(batchDone.get(id) ?? []), ...fns]);
      done = batchDone;
      for (const [id, r] of retries) batchRetries.set(id, r);
      retries = batchRetries;
      deletes = batchDeletes.concat(deletes);
      crons = batchCrons.concat(crons);
      await delay(backoffMs(failures++));
      retry = true;
    }
  }

  return {
    log(row) {
      logs.push(row);
      schedule();
    },
    fnDone(eventId, fnId) {
      const list = done.get(eventId);
      if (list) list.push(fnId);
      else done.set(eventId, [fnId]);
      schedule();
    },
    retried(eventId, attempts, error) {
      retries.set(eventId, { attempts, error });
      schedule();
    },
    eventDone(eventId) {
      deletes.push(eventId);
      pendingDelete.add(eventId);
      schedule();
    },
    cronDone(cronId, error) {
      crons.push({ id: cronId, error });
      schedule();
    },
    isPending: (id) => pendingDelete.has(id),
    pendingCount: () => pendingDelete.size,
    async flush() {
      flushing++;
      try {
        while (writing || waiting() > 0) {
          if (!writing) write();
          await writing;
        }
      } finally {
        flushing--;
      }
    },
  };
}

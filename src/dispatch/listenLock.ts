// While the master waits for NOTIFY it holds rppd_listen_lock on a connection of its own; writers
// send a NOTIFY only then (rppd_event()), so with no master, or one that polls, they send none.
// The lock goes with that session: a lost connection leaves writers silent, so the dispatcher
// polls until it holds the lock again on a new connection.
import type pg from 'pg';
import { releaseListenLock, takeListenLock } from '../db/queries/events.ts';
import { coerceError } from '../util/errors.ts';

export interface ListenLock {
  /** false: a writer that sends no NOTIFY is still in its transaction after 20 ms; tried again later. */
  hold(): Promise<boolean>;
  drop(): Promise<void>;
}

// Each try waits up to 20 ms (rppd_listen_lock); only a writer that stays in its transaction fails it.
const RETRY_MS = 250;

export function makeListenLock(pool: pg.Pool, schema: string, onLost: (err: Error) => void): ListenLock {
  let client: pg.PoolClient | null = null;
  let nextTry = 0;

  function lost(err: Error): void {
    const held = client;
    if (!held) return;
    client = null;
    held.release(err);
    onLost(err);
  }

  return {
    async hold() {
      if (client) return true;
      if (Date.now() < nextTry) return false;
      nextTry = Date.now() + RETRY_MS;
      const fresh = await pool.connect();
      fresh.on('error', lost);
      let held = false;
      try {
        held = await takeListenLock(fresh, schema);
      } catch (err) {
        fresh.off('error', lost);
        fresh.release(coerceError(err));
        throw err;
      }
      if (!held) {
        fresh.off('error', lost);
        fresh.release();
        return false;
      }
      client = fresh;
      return true;
    },
    async drop() {
      const held = client;
      if (!held) return;
      client = null;
      held.off('error', lost);
      try {
        await releaseListenLock(held, schema);
        held.release();
      } catch (err) {
        // Closing the session releases the lock as well.
        held.release(coerceError(err));
      }
    },
  };
}

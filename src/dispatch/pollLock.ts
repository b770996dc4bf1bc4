// While the master polls it holds rppd_poll_lock on a connection of its own; writers then send no
// NOTIFY (rppd_event()). The lock goes with that session: a lost connection leaves writers
// notifying, and the next switch to polling takes it again on a new connection.
import type pg from 'pg';
import { releasePollLock, takePollLock } from '../db/queries/events.ts';
import { coerceError } from '../util/errors.ts';

export interface PollLock {
  /** false: a writer's transaction still shares the lock after 20 ms (it notifies); tried again later. */
  hold(): Promise<boolean>;
  drop(): Promise<void>;
}

// Each try waits up to 20 ms (rppd_poll_lock); only a writer that stays in its transaction fails it.
const RETRY_MS = 250;

export function makePollLock(pool: pg.Pool, schema: string, onLost: (err: Error) => void): PollLock {
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
        held = await takePollLock(fresh, schema);
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
        await releasePollLock(held, schema);
        held.release();
      } catch (err) {
        // Closing the session releases the lock as well.
        held.release(coerceError(err));
      }
    },
  };
}

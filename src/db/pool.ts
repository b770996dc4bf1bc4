// The node's own connection pool. Errors of idle clients (server restart) are
// reported, never thrown: the pool replaces broken clients on the next checkout.
import pg from 'pg';
import { backoffMs, delay } from '../util/backoff.ts';
import { describeError } from '../util/errors.ts';

// bigint (int8) and numeric come back as strings by default; event ids stay strings,
// counts are parsed where they are read.
export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export interface PoolOptions {
  url: string;
  max: number;
  applicationName: string;
  onError?: (err: Error) => void;
}

export function makePool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max,
    application_name: options.applicationName,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  });
  pool.on('error', (err) => options.onError?.(err));
  return pool;
}

/** Run fn inside BEGIN/COMMIT on one client; ROLLBACK on error. */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw err;
  } finally {
    client.release(broken);
  }
}

/** A client, retrying with capped backoff while the database is not reachable. */
export async function connectWithRetry(
  pool: pg.Pool,
  signal: AbortSignal,
  onRetry: (waitMs: number, reason: string) => void,
): Promise<pg.PoolClient> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await pool.connect();
    } catch (err) {
      if (signal.aborted) throw err;
      const wait = backoffMs(attempt, 500, 15_000);
      onRetry(wait, describeError(err));
      await delay(wait, signal);
    }
  }
}

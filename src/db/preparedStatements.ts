// A statement text that a connection runs again and again is prepared on it (a named
// statement), so PostgreSQL parses and plans it once instead of on every run. psycopg 3 and
// pgJDBC do the same after 5 executions; postgres.js prepares every statement. Used by ctx.db in
// JS functions and by the master's own per-batch statements (queryPrepared).
// Bench (pgbench, 4 clients): SELECT by primary key 17-18k/s unnamed vs 28-37k/s prepared; the
// W2 handler's SELECT + INSERT + COMMIT 3,150/s vs 4,430/s. WAL capture's queue write (one event,
// idle server): 0.45-0.73 ms unnamed vs 0.24-0.39 ms prepared.
//
// Bounded: at most `maxPrepared` statements per connection, and the texts seen but not yet
// prepared are forgotten past `maxSeen` (SQL built with literals never repeats).
// A statement PostgreSQL no longer knows (DISCARD ALL, DEALLOCATE) or whose result type changed
// (ALTER TABLE) is prepared again under a new name; outside a transaction the query is retried once.
import pg from 'pg';

export interface PrepareOptions {
  /** Runs of a text on one connection before it is prepared (psycopg 3's prepare_threshold); 0: never. */
  threshold?: number;
  maxPrepared?: number;
  maxSeen?: number;
}

/** 26000: prepared statement does not exist; 0A000 with this text: the cached plan's result type changed. */
function invalidatesStatements(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (code === '26000') return true;
  return code === '0A000' && typeof message === 'string' && message.includes('cached plan must not change result type');
}

interface Cache {
  runs: Map<string, number>;
  names: Map<string, string>;
}

export function makeStatementRunner(options: PrepareOptions = {}) {
  const threshold = options.threshold ?? 5;
  const maxPrepared = options.maxPrepared ?? 256;
  const maxSeen = options.maxSeen ?? 1000;
  const caches = new WeakMap<pg.Client, Cache>();
  // Names are never reused: node-postgres skips Parse for a name it has sent on that connection.
  let seq = 0;

  function cacheOf(client: pg.Client): Cache {
    let cache = caches.get(client);
    if (!cache) {
      cache = { runs: new Map(), names: new Map() };
      caches.set(client, cache);
    }
    return cache;
  }

  function nameFor(cache: Cache, text: string): string | undefined {
    if (threshold <= 0) return undefined;
    const known = cache.names.get(text);
    if (known !== undefined || cache.names.size >= maxPrepared) return known;
    const runs = (cache.runs.get(text) ?? 0) + 1;
    if (runs < threshold) {
      if (cache.runs.size >= maxSeen) cache.runs.clear();
      cache.runs.set(text, runs);
      return undefined;
    }
    cache.runs.delete(text);
    const name = `rppd_${++seq}`;
    cache.names.set(text, name);
    return name;
  }

  return async function run(client: pg.Client, text: string, values?: unknown[]): Promise<pg.QueryResult> {
    const cache = cacheOf(client);
    const name = nameFor(cache, text);
    if (name === undefined) return client.query(text, values);
    try {
      return await client.query({ name, text, values });
    } catch (err) {
      if (!invalidatesStatements(err)) throw err;
      // The server lost them all (26000) or this one's plan (0A000): new names from now on.
      if ((err as { code?: unknown }).code === '26000') cache.names.clear();
      else cache.names.delete(text);
      if (client.getTransactionStatus() !== 'I') throw err;
      return client.query(text, values);
    }
  };
}

const masterRunner = makeStatementRunner({ threshold: 2 });

/**
 * The master's statements that run per batch of events (reads, completions, WAL capture's
 * writes): prepared on each connection of the pool that runs them twice. On a pool, like
 * pool.query: one client for the statement, dropped from the pool if the statement failed.
 */
export async function queryPrepared<R extends pg.QueryResultRow = pg.QueryResultRow>(
  db: pg.ClientBase | pg.Pool,
  text: string,
  values?: unknown[],
): Promise<pg.QueryResult<R>> {
  if (!(db instanceof pg.Pool)) return (await masterRunner(db as pg.Client, text, values)) as pg.QueryResult<R>;
  const client = await db.connect();
  try {
    const result = await masterRunner(client, text, values);
    client.release();
    return result as pg.QueryResult<R>;
  } catch (err) {
    client.release(err as Error);
    throw err;
  }
}

// The tables every system works on, and what the workloads read back from them.
// src: the rows users write (the trigger's table); sink: one row per handled event,
// written by the handler with the time it started (started_ms, epoch ms taken in the
// handler), the capture order of its event (seq: rppd's event id, graphile-worker's job id)
// and the time of its insert (finished_at, clock_timestamp()).
import pg from 'pg';
import { sleep } from './measure.ts';

export const BENCH_TABLES = `
CREATE TABLE src (
  id bigserial PRIMARY KEY,
  k int NOT NULL,
  payload text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE sink (
  id bigserial PRIMARY KEY,
  src_id bigint NOT NULL,
  k int NOT NULL,
  started_ms float8 NOT NULL,
  seq bigint,
  finished_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
`;

/** One short-lived connection per call: the bench's own queries are few. */
export async function withDb<T>(url: string, fn: (db: pg.Client) => Promise<T>): Promise<T> {
  const db = new pg.Client({ connectionString: url, application_name: 'rppd bench' });
  await db.connect();
  db.on('error', () => undefined);
  try {
    return await fn(db);
  } finally {
    await db.end().catch(() => undefined);
  }
}

export async function sql(url: string, text: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  return withDb(url, async (db) => (await db.query(text, params)).rows);
}

export interface SinkCheck {
  /** Source rows written (the events expected). */
  srcRows: number;
  rows: number;
  distinct: number;
  /** Epoch ms of the first insert into src (its created_at) and of the last sink row. */
  firstInsertMs: number;
  lastInsertMs: number;
  lastSinkMs: number;
  firstSinkMs: number;
}

/** What arrived for the source rows after `afterId` (rows before it were a warm-up). */
export async function checkSink(url: string, afterId = 0): Promise<SinkCheck> {
  const [row] = await sql(
    url,
    `SELECT (SELECT count(*) FROM src WHERE id > $1)::int AS src_rows,
            (SELECT count(*) FROM sink WHERE src_id > $1)::int AS rows,
            (SELECT count(DISTINCT src_id) FROM sink WHERE src_id > $1)::int AS distinct,
            (SELECT extract(epoch FROM min(created_at)) * 1000 FROM src WHERE id > $1)::float8 AS first_insert,
            (SELECT extract(epoch FROM max(created_at)) * 1000 FROM src WHERE id > $1)::float8 AS last_insert,
            (SELECT extract(epoch FROM min(finished_at)) * 1000 FROM sink WHERE src_id > $1)::float8 AS first_sink,
            (SELECT extract(epoch FROM max(finished_at)) * 1000 FROM sink WHERE src_id > $1)::float8 AS last_sink`,
    [afterId],
  );
  return {
    srcRows: Number(row!.src_rows),
    rows: Number(row!.rows),
    distinct: Number(row!.distinct),
    firstInsertMs: Number(row!.first_insert),
    lastInsertMs: Number(row!.last_insert),
    firstSinkMs: Number(row!.first_sink),
    lastSinkMs: Number(row!.last_sink),
  };
}

/** Polls the sink's row count (max(id): an index look-up, as the sink is insert-only) until it reaches n. */
export async function waitForSink(
  url: string,
  n: number,
  options: { timeoutMs: number; intervalMs?: number; onProgress?: (count: number, atMs: number) => void },
): Promise<boolean> {
  return withDb(url, async (db) => {
    const deadline = Date.now() + options.timeoutMs;
    let last = -1;
    let lastChange = Date.now();
    for (;;) {
      const { rows } = await db.query<{ n: string | null }>('SELECT max(id) AS n FROM sink');
      const count = Number(rows[0]?.n ?? 0);
      options.onProgress?.(count, performance.timeOrigin + performance.now());
      if (count >= n) return true;
      if (count !== last) {
        last = count;
        lastChange = Date.now();
      }
      // Nothing moved for a long while: a stuck system; report what it did.
      if (Date.now() > deadline || Date.now() - lastChange > 120_000) return false;
      await sleep(options.intervalMs ?? 100);
    }
  });
}

/**
 * Sink rows of one key k written out of capture order (seq: event/job id, assigned in the
 * trigger). src.id is no reference: concurrent writers take src ids and event ids in different
 * orders, and their relative order is not defined.
 */
export async function orderViolations(url: string): Promise<number> {
  const [row] = await sql(
    url,
    `SELECT count(*)::int AS n FROM (
       SELECT seq < lag(seq) OVER (PARTITION BY k ORDER BY id) AS bad FROM sink) s
     WHERE bad`,
  );
  return Number(row!.n);
}

// Runtime SQL on rppd_cron. A firing and its event are one transaction, and the
// started_at condition makes a firing happen once even across master changes.
import type pg from 'pg';
import { rppdTable } from '../ident.ts';

export interface CronRow {
  id: number;
  fn_id: number;
  cron: string;
  column_name: string;
  column_value: string | null;
  cadence: boolean | null;
  timeout_sec: number | null;
  started_at: Date | null;
  finished_at: Date | null;
  error_msg: string | null;
}

export async function loadCrons(db: pg.ClientBase | pg.Pool, schema: string): Promise<CronRow[]> {
  const { rows } = await db.query<CronRow>(
    `SELECT id, fn_id, cron, column_name, column_value, cadence, timeout_sec, started_at, finished_at, error_msg
       FROM ${rppdTable(schema, 'rppd_cron')} ORDER BY id`,
  );
  return rows;
}

export async function databaseNow(db: pg.ClientBase | pg.Pool): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>('SELECT now() AS now');
  return rows[0]!.now;
}

/**
 * Fire schedule `id` for the time `due`: mark it started and queue an event for its
 * function, unless it already fired for that time or a previous firing is still
 * running within its timeout_sec. Returns the event id, or null when skipped.
 */
export async function fireCron(
  db: pg.ClientBase | pg.Pool,
  schema: string,
  id: number,
  due: Date,
): Promise<string | null> {
  const { rows } = await db.query<{ event_id: string }>(
    `WITH c AS (
       UPDATE ${rppdTable(schema, 'rppd_cron')} c
          SET started_at = now(), finished_at = NULL
        WHERE c.id = $1
          AND (c.started_at IS NULL OR c.started_at < $2::timestamptz)
          AND NOT (c.started_at IS NOT NULL AND c.finished_at IS NULL
                   AND (coalesce(c.timeout_sec, 0) <= 0 OR c.started_at + make_interval(secs => c.timeout_sec) > now()))
          AND EXISTS (SELECT 1 FROM ${rppdTable(schema, 'rppd_function')} f WHERE f.id = c.fn_id)
        RETURNING c.id, c.fn_id, c.column_name, c.column_value
     ),
     e AS (
       INSERT INTO ${rppdTable(schema, 'rppd_event_queue')} (schema_table, trig, new_row)
       SELECT f.schema_table, 0,
              json_build_object(c.column_name, c.column_value, 'rppd_cron_id', c.id, 'rppd_due_at', $2::timestamptz)
         FROM c JOIN ${rppdTable(schema, 'rppd_function')} f ON f.id = c.fn_id
       RETURNING id
     )
     INSERT INTO ${rppdTable(schema, 'rppd_event_state')} (event_id, fn_id, cron_id)
     SELECT e.id, c.fn_id, c.id FROM e, c
     RETURNING event_id`,
    [id, due.toISOString()],
  );
  return rows[0]?.event_id ?? null;
}

export const invalidCronPrefix = 'invalid cron expression';

/** Record that the expression does not parse, or clear that record once it does. */
export async function setCronInvalid(db: pg.ClientBase | pg.Pool, schema: string, id: number, error: string | null) {
  await db.query(
    error === null
      ? `UPDATE ${rppdTable(schema, 'rppd_cron')} SET error_msg = NULL WHERE id = $1 AND starts_with(error_msg, $2)`
      : `UPDATE ${rppdTable(schema, 'rppd_cron')} SET error_msg = $2 WHERE id = $1 AND error_msg IS DISTINCT FROM $2`,
    [id, error ?? invalidCronPrefix],
  );
}

/** Firings whose function runs finished: finished_at and the error (NULL on success). */
export async function finishCrons(
  db: pg.ClientBase,
  schema: string,
  done: { id: number; error: string | null }[],
): Promise<void> {
  if (done.length === 0) return;
  await db.query(
    `UPDATE ${rppdTable(schema, 'rppd_cron')} c SET finished_at = now(), error_msg = d.error
       FROM jsonb_to_recordset($1::jsonb) AS d(id int, error text) WHERE c.id = d.id`,
    [JSON.stringify(done)],
  );
}

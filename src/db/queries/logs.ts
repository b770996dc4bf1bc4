// Runtime SQL on rppd_function_log.
import type pg from 'pg';
import { rppdTable } from '../ident.ts';
import { queryPrepared } from '../preparedStatements.ts';

export interface LogRow {
  node_id: number;
  fn_id: number;
  trig_value: Record<string, unknown> | null;
  trig_type: number;
  started_at: string;
  took_ms: number;
  output: string | null;
  error_msg: string | null;
  event_id: string;
}

export async function insertLogs(db: pg.ClientBase, schema: string, logs: LogRow[]): Promise<void> {
  if (logs.length === 0) return;
  await queryPrepared(
    db,
    `INSERT INTO ${rppdTable(schema, 'rppd_function_log')}
            (node_id, fn_id, trig_value, trig_type, started_at, took_ms, output, error_msg, event_id)
     SELECT node_id, fn_id, trig_value, trig_type, started_at, took_ms, output, error_msg, event_id
       FROM jsonb_to_recordset($1::jsonb) AS d(node_id int, fn_id int, trig_value json, trig_type int,
            started_at timestamptz, took_ms bigint, output text, error_msg text, event_id bigint)`,
    [JSON.stringify(logs)],
  );
}

/** Delete log rows older than their function's cleanup_logs_min (0 = keep). */
export async function cleanupLogs(db: pg.ClientBase | pg.Pool, schema: string): Promise<number> {
  const res = await db.query(
    `DELETE FROM ${rppdTable(schema, 'rppd_function_log')} l
      USING ${rppdTable(schema, 'rppd_function')} f
      WHERE l.fn_id = f.id AND f.cleanup_logs_min > 0
        AND l.started_at < now() - make_interval(mins => f.cleanup_logs_min)`,
  );
  return res.rowCount ?? 0;
}

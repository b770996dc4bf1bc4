// Runtime SQL on rppd_function and the catalog facts about user tables.
import type pg from 'pg';
import { rppdTable } from '../ident.ts';

export interface FunctionRow {
  id: number;
  code: string;
  checksum: string;
  schema_table: string;
  topic: string;
  priority: number;
  queue: boolean;
  cleanup_logs_min: number;
  fn_logging: boolean;
  verbose_debug: boolean;
  lang: string;
  timeout_sec: number;
  env: unknown;
  sign: unknown;
}

/** The version first, then the rows: the rows are at least as new as the version. */
export async function functionsVersion(db: pg.ClientBase | pg.Pool, schema: string): Promise<bigint> {
  const { rows } = await db.query<{ v: string }>(
    `SELECT functions_version AS v FROM ${rppdTable(schema, 'rppd_wake')}`,
  );
  return BigInt(rows[0]?.v ?? 0);
}

export async function loadFunctions(db: pg.ClientBase | pg.Pool, schema: string): Promise<FunctionRow[]> {
  const { rows } = await db.query<FunctionRow>(
    `SELECT id, code, checksum, schema_table, topic, priority, queue, cleanup_logs_min, fn_logging,
            verbose_debug, lang, timeout_sec, env, sign
       FROM ${rppdTable(schema, 'rppd_function')} ORDER BY priority, id`,
  );
  return rows;
}

/** Primary-key columns of a table in key order (empty when it has none or does not exist). */
export async function primaryKeyColumns(db: pg.ClientBase | pg.Pool, schemaTable: string): Promise<string[]> {
  const dot = schemaTable.indexOf('.');
  const schema = dot < 0 ? 'public' : schemaTable.slice(0, dot);
  const table = dot < 0 ? schemaTable : schemaTable.slice(dot + 1);
  const { rows } = await db.query<{ attname: string }>(
    `SELECT a.attname
       FROM pg_index i
       JOIN pg_class c ON c.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
      WHERE i.indisprimary AND n.nspname = $1 AND c.relname = $2
      ORDER BY k.ord`,
    [schema, table],
  );
  return rows.map((r) => r.attname);
}

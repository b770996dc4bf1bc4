// Runtime SQL of WAL capture: the slot's names, and writing decoded transactions to
// rppd_event_queue with the stream position in the same commit (rppd_wal_position).
import type pg from 'pg';
import { parseLsn } from '../../util/lsn.ts';
import { quoteIdent, rppdTable } from '../ident.ts';
import { SqlState } from '../sqlState.ts';

export interface WalNames {
  publication: string;
  slot: string;
}

/** The schema's publication and slot, whether the slot exists, and the PID streaming it; null before rppd 1.3.0. */
export async function walSlotState(
  db: pg.ClientBase | pg.Pool,
  schema: string,
): Promise<(WalNames & { exists: boolean; activePid: number | null }) | null> {
  try {
    const { rows } = await db.query<WalNames & { exists: boolean; active_pid: number | null }>(
      `SELECT n.publication, n.slot, s.slot_name IS NOT NULL AS exists, s.active_pid
         FROM ${rppdTable(schema, 'rppd_wal_names')}() n
         LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = n.slot AND s.database = current_database()`,
    );
    const row = rows[0];
    return row ? { publication: row.publication, slot: row.slot, exists: row.exists, activePid: row.active_pid } : null;
  } catch (err) {
    if ((err as { code?: string }).code === SqlState.undefinedFunction) return null;
    throw err;
  }
}

/** One event as it goes to rppd_event_queue: row images as JSON objects of the server's text values. */
export interface WalEvent {
  /** "schema"."table", quoted: the row type json_populate_record fills. */
  rowType: string;
  schemaTable: string;
  trig: number;
  newRow: string | null;
  oldRow: string | null;
}

export interface WalTransaction {
  endLsn: bigint;
  endLsnText: string;
  events: WalEvent[];
}

export interface WriteResult {
  written: number;
  /** Transactions at or below the stored position: written by an earlier stream. */
  skipped: number;
  /** Events whose row type would not take their values (table dropped or altered since): stored as text values. */
  raw: WalEvent[];
}

// PostgreSQL turns each text value into the column's type (its input function) and then
// writes the row as to_json(NEW) does: the event carries the trigger's JSON.
const insertSql = (schema: string, rowType: string | null) => {
  const image = (col: string) =>
    rowType === null
      ? col
      : `CASE WHEN ${col} IS NULL THEN NULL ELSE to_json(json_populate_record(NULL::${rowType}, ${col})) END`;
  return `INSERT INTO ${rppdTable(schema, 'rppd_event_queue')} (schema_table, trig, new_row, old_row)
  SELECT u.t, u.trig, ${image('u.n')}, ${image('u.o')}
    FROM unnest($1::text[], $2::int2[], $3::json[], $4::json[]) WITH ORDINALITY AS u(t, trig, n, o, ord)
   ORDER BY u.ord`;
};

/** Runs of consecutive events of one table: one INSERT each, in commit order. */
function runsOf(events: WalEvent[]): WalEvent[][] {
  const runs: WalEvent[][] = [];
  for (const e of events) {
    const last = runs[runs.length - 1];
    if (last?.[0]?.rowType === e.rowType) last.push(e);
    else runs.push([e]);
  }
  return runs;
}

const params = (run: WalEvent[]) => [
  run.map((e) => e.schemaTable),
  run.map((e) => e.trig),
  run.map((e) => e.newRow),
  run.map((e) => e.oldRow),
];

const isDataError = (err: unknown) => {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('42'));
};

/**
 * Writes the transactions not yet stored, in order, and moves rppd_wal_position to the
 * last one's end LSN, in one commit. `tolerant` puts each table's run in a savepoint
 * and stores the values as text where the row type refuses them.
 */
export async function writeWalTransactions(
  client: pg.ClientBase,
  schema: string,
  txns: WalTransaction[],
  tolerant = false,
): Promise<WriteResult> {
  const result: WriteResult = { written: 0, skipped: 0, raw: [] };
  await client.query('BEGIN');
  try {
    const pos = await client.query<{ lsn: string }>(
      `SELECT lsn::text FROM ${rppdTable(schema, 'rppd_wal_position')} WHERE id = 1 FOR UPDATE`,
    );
    const stored = pos.rows[0]?.lsn;
    if (stored === undefined) throw new Error(`${schema}.rppd_wal_position has no row: run rppd init`);
    const storedLsn = parseLsn(stored);
    const fresh = txns.filter((t) => t.endLsn > storedLsn);
    result.skipped = txns.length - fresh.length;
    const last = fresh[fresh.length - 1];
    if (last) {
      for (const run of runsOf(fresh.flatMap((t) => t.events))) {
        const rowType = run[0]?.rowType ?? null;
        if (!tolerant) {
          await client.query(insertSql(schema, rowType), params(run));
        } else {
          await client.query('SAVEPOINT rppd_wal_run');
          try {
            await client.query(insertSql(schema, rowType), params(run));
            await client.query('RELEASE SAVEPOINT rppd_wal_run');
          } catch (err) {
            if (!isDataError(err)) throw err;
            await client.query('ROLLBACK TO SAVEPOINT rppd_wal_run');
            await client.query(insertSql(schema, null), params(run));
            result.raw.push(...run);
          }
        }
        result.written += run.length;
      }
      await client.query(
        `UPDATE ${rppdTable(schema, 'rppd_wal_position')} SET lsn = $1::pg_lsn, written_at = now() WHERE id = 1`,
        [last.endLsnText],
      );
    }
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    if (!tolerant && isDataError(err)) return writeWalTransactions(client, schema, txns, true);
    throw err;
  }
}

/** "schema"."table" of a decoded relation. */
export const relationRowType = (schema: string, name: string) => `${quoteIdent(schema)}.${quoteIdent(name)}`;

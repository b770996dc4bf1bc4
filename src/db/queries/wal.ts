// Runtime SQL of WAL capture: the slot's names, and writing decoded transactions to
// rppd_event_queue with the stream position in the same commit (rppd_wal_position).
import type pg from 'pg';
import { parseLsn } from '../../util/lsn.ts';
import { quoteIdent, rppdTable } from '../ident.ts';
import { queryPrepared } from '../preparedStatements.ts';
import { SqlState } from '../sqlState.ts';
import type { EventRow } from './events.ts';

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

/**
 * WAL the server has written since the schema's slot was last confirmed (bytes): what capture
 * has yet to write, and the server keeps meanwhile. Null with no slot, or before rppd 1.3.0.
 */
export async function walSlotLag(db: pg.ClientBase | pg.Pool, schema: string): Promise<number | null> {
  try {
    const { rows } = await db.query<{ lag: number | null }>(
      `SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::float8 AS lag
         FROM ${rppdTable(schema, 'rppd_wal_names')}() n
         JOIN pg_catalog.pg_replication_slots s ON s.slot_name = n.slot AND s.database = current_database()`,
    );
    return rows[0]?.lag ?? null;
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
  /** The transaction id as pgoutput sends it (32 bits, no epoch). */
  xid: number;
  endLsn: bigint;
  endLsnText: string;
  events: WalEvent[];
  /** The server's commit time and when the master received the commit (epoch ms; metrics only). */
  committedAtMs?: number;
  receivedAtMs?: number;
}

export interface WriteResult {
  /** A transaction is not visible to other sessions yet: nothing was written, try again shortly. */
  notVisible?: boolean;
  written: number;
  /** Transactions at or below the stored position: written by an earlier stream. */
  skipped: number;
  /** Events whose row type would not take their values (table dropped or altered since): stored as text values. */
  raw: WalEvent[];
}

// PostgreSQL turns each text value into the column's type (its input function) and then
// writes the row as to_json(NEW) does: the event carries the trigger's JSON.
const image = (col: string, rowType: string) =>
  `CASE WHEN ${col} IS NULL THEN NULL ELSE to_json(json_populate_record(NULL::${rowType}, ${col})) END`;

/** The row images by each event's row type (u.ty indexes `rowTypes`); `null`: the text values as they are. */
const images = (col: string, rowTypes: string[] | null) => {
  if (rowTypes === null) return col;
  if (rowTypes.length === 1) return image(col, rowTypes[0]!);
  return `CASE u.ty ${rowTypes.map((t, i) => `WHEN ${i} THEN ${image(col, t)}`).join(' ')} END`;
};

const selectEvents = (rowTypes: string[] | null, where = '') =>
  `SELECT u.t, u.trig, ${images('u.n', rowTypes)}, ${images('u.o', rowTypes)}
     FROM unnest($1::text[], $2::int2[], $3::json[], $4::json[], $5::int[]) WITH ORDINALITY AS u(t, trig, n, o, ty, ord)
    ${where} ORDER BY u.ord`;

const params = (events: WalEvent[], rowTypes: string[]) => [
  events.map((e) => e.schemaTable),
  events.map((e) => e.trig),
  events.map((e) => e.newRow),
  events.map((e) => e.oldRow),
  events.map((e) => rowTypes.indexOf(e.rowType)),
];

const isDataError = (err: unknown) => {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('42'));
};

const LSNS = 'pg_current_wal_insert_lsn()::text AS insert_lsn, pg_current_wal_flush_lsn()::text AS flush_lsn';

/**
 * Whether the statement's snapshot sees every transaction of `param` (32-bit xids, made full
 * against the snapshot's xmax). A commit is in the WAL, and so decoded and sent, a moment before
 * other sessions see it: PostgreSQL flushes the commit record (and waits for synchronous
 * standbys) before the transaction leaves the proc array. An event written before that would run
 * a function that cannot see its row yet. Seen by this statement, it is seen by every later one.
 */
const visible = (param: string) =>
  `(SELECT coalesce(bool_and(txid_visible_in_snapshot(m - (m % 4294967296 - x + 4294967296) % 4294967296, s)), true)
      FROM (SELECT txid_current_snapshot() AS s) c, LATERAL (SELECT txid_snapshot_xmax(c.s) AS m) mm,
           unnest(${param}::bigint[]) x)`;

/** The server's WAL insert and flush positions now. */
export async function walLsns(client: pg.ClientBase): Promise<{ insert: bigint; flush: bigint }> {
  const { rows } = await queryPrepared<{ insert_lsn: string; flush_lsn: string }>(client, `SELECT ${LSNS}`);
  return { insert: parseLsn(rows[0]!.insert_lsn), flush: parseLsn(rows[0]!.flush_lsn) };
}

export interface WriteOutcome extends WriteResult {
  /** The stored position after the write. */
  position: bigint;
  /** The events as written, in id order, when asked for and written by the one-statement path; else empty. */
  rows: EventRow[];
  /**
   * The server's WAL insert and flush positions, read during the write's statement (afterCommit
   * false: the insert position is past every earlier commit, not this one's) or after its commit; null when nothing was written.
   */
  wal: { insert: bigint; flush: bigint; afterCommit: boolean } | null;
}

async function storedPosition(client: pg.ClientBase, schema: string, lock = ''): Promise<bigint> {
  const { rows } = await client.query<{ lsn: string }>(
    `SELECT lsn::text FROM ${rppdTable(schema, 'rppd_wal_position')} WHERE id = 1 ${lock}`,
  );
  const stored = rows[0]?.lsn;
  if (stored === undefined) throw new Error(`${schema}.rppd_wal_position has no row: run rppd init`);
  return parseLsn(stored);
}

export interface WriteOptions {
  /** The position the caller last saw (its own previous write): the write needs no read of it first. */
  known?: bigint;
  /** Return the written events as the dispatcher reads them, so that it need not read them again. */
  returnRows?: boolean;
}

/** The written events as selectEventsSql returns them (a fresh event has no state row), or the count alone. */
const written = (schema: string, returnRows: boolean) =>
  returnRows
    ? `SELECT i.id, i.schema_table, i.trig, i.new_row, i.old_row, '{}'::int[] AS done_fns, 0 AS attempts,
              NULL::int AS fn_id, NULL::int AS cron_id, w.fv, w.n, w.visible, w.insert_lsn, w.flush_lsn
         FROM (SELECT (SELECT count(*) FROM ins)::int AS n, (SELECT ok FROM vis) AS visible,
                      (SELECT functions_version FROM ${rppdTable(schema, 'rppd_wake')}) AS fv, ${LSNS}) w
         LEFT JOIN ins i ON true ORDER BY i.id`
    : `SELECT (SELECT count(*) FROM ins)::int AS n, (SELECT ok FROM vis) AS visible, ${LSNS}`;

type WrittenRow = Partial<EventRow> & { n: number; visible: boolean; insert_lsn: string; flush_lsn: string };

/**
 * Writes the transactions not yet stored, in order, and moves rppd_wal_position to the
 * last one's end LSN, in one commit. With a `known` position it is one statement, which
 * writes nothing unless the stored position is still below the first transaction's end. A
 * row type that refuses its values (table dropped or altered since) sends the batch to the
 * slow path, which stores those as text (and returns no rows).
 */
export async function writeWalTransactions(
  client: pg.ClientBase,
  schema: string,
  txns: WalTransaction[],
  options: WriteOptions = {},
): Promise<WriteOutcome> {
  const from = options.known ?? (await storedPosition(client, schema));
  const fresh = txns.filter((t) => t.endLsn > from);
  const first = fresh[0];
  const last = fresh[fresh.length - 1];
  if (!first || !last) return nothing(from, txns.length);
  const events = fresh.flatMap((t) => t.events);
  const rowTypes = [...new Set(events.map((e) => e.rowType))];
  const returnRows = options.returnRows ?? false;
  try {
    const res = await queryPrepared<WrittenRow>(
      client,
      `WITH vis AS (SELECT ${visible('$8')} AS ok),
       pos AS (
         UPDATE ${rppdTable(schema, 'rppd_wal_position')} SET lsn = $6::pg_lsn, written_at = now()
          WHERE id = 1 AND lsn < $7::pg_lsn AND (SELECT ok FROM vis) RETURNING 1),
       ins AS (
         INSERT INTO ${rppdTable(schema, 'rppd_event_queue')} (schema_table, trig, new_row, old_row)
         ${selectEvents(rowTypes, 'WHERE EXISTS (SELECT 1 FROM pos)')}
         RETURNING ${returnRows ? 'id, schema_table, trig, new_row, old_row' : '1'})
       ${written(schema, returnRows)}`,
      [...params(events, rowTypes), last.endLsnText, first.endLsnText, fresh.map((t) => t.xid)],
    );
    const row = res.rows[0];
    if (row && !row.visible) return { ...nothing(from, txns.length - fresh.length), notVisible: true };
    if (row && row.n === events.length) {
      return {
        written: events.length,
        skipped: txns.length - fresh.length,
        raw: [],
        rows: returnRows ? (res.rows as EventRow[]) : [],
        position: last.endLsn,
        wal: { insert: parseLsn(row.insert_lsn), flush: parseLsn(row.flush_lsn), afterCommit: false },
      };
    }
    // Written by another stream meanwhile (a master before this one): nothing was; look again.
  } catch (err) {
    if (!isDataError(err)) throw err;
  }
  return writeTolerant(client, schema, txns);
}

/** One transaction under the position's row lock; each table's run in a savepoint, stored as text if refused. */
async function writeTolerant(client: pg.ClientBase, schema: string, txns: WalTransaction[]): Promise<WriteOutcome> {
  const result: WriteResult & { rows: EventRow[] } = { written: 0, skipped: 0, raw: [], rows: [] };
  await client.query('BEGIN');
  try {
    const stored = await storedPosition(client, schema, 'FOR UPDATE');
    const fresh = txns.filter((t) => t.endLsn > stored);
    result.skipped = txns.length - fresh.length;
    const last = fresh[fresh.length - 1];
    if (!last) {
      await client.query('COMMIT');
      return nothing(stored, result.skipped);
    }
    const { rows } = await client.query<{ ok: boolean }>(`SELECT ${visible('$1')} AS ok`, [fresh.map((t) => t.xid)]);
    if (!rows[0]?.ok) {
      await client.query('COMMIT');
      return { ...nothing(stored, result.skipped), notVisible: true };
    }
    for (const run of runsOf(fresh.flatMap((t) => t.events))) {
      const rowTypes = [run[0]!.rowType];
      const insert = (types: string[] | null) =>
        client.query(
          `INSERT INTO ${rppdTable(schema, 'rppd_event_queue')} (schema_table, trig, new_row, old_row) ${selectEvents(types)}`,
          params(run, rowTypes),
        );
      await client.query('SAVEPOINT rppd_wal_run');
      try {
        await insert(rowTypes);
        await client.query('RELEASE SAVEPOINT rppd_wal_run');
      } catch (err) {
        if (!isDataError(err)) throw err;
        await client.query('ROLLBACK TO SAVEPOINT rppd_wal_run');
        await insert(null);
        result.raw.push(...run);
      }
      result.written += run.length;
    }
    await client.query(
      `UPDATE ${rppdTable(schema, 'rppd_wal_position')} SET lsn = $1::pg_lsn, written_at = now() WHERE id = 1`,
      [last.endLsnText],
    );
    await client.query('COMMIT');
    return { ...result, position: last.endLsn, wal: { ...(await walLsns(client)), afterCommit: true } };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

const nothing = (position: bigint, skipped: number): WriteOutcome => ({
  written: 0,
  skipped,
  raw: [],
  rows: [],
  position,
  wal: null,
});

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

/** "schema"."table" of a decoded relation. */
export const relationRowType = (schema: string, name: string) => `${quoteIdent(schema)}.${quoteIdent(name)}`;

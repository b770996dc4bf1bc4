// Runtime SQL on rppd_event_queue (what writers captured) and rppd_event_state (what
// the master recorded about an event, for the few that have any). Batched: one round
// trip per batch of events.
import type pg from 'pg';
import { rppdTable } from '../ident.ts';
import { queryPrepared } from '../preparedStatements.ts';
import { leaseHeldSql } from './nodes.ts';

export interface EventRow {
  id: string;
  schema_table: string;
  trig: number;
  new_row: Record<string, unknown> | null;
  old_row: Record<string, unknown> | null;
  done_fns: number[];
  attempts: number;
  /** Schedules: the one function to run, and the rppd_cron row. */
  fn_id: number | null;
  cron_id: number | null;
  /** rppd_wake.functions_version in the snapshot that read this event. */
  fv: string;
}

/** Events with their state (if any) and the functions version of the snapshot, in id order. */
export const selectEventsSql = (schema: string, where: string, limit = '') =>
  `SELECT q.id, q.schema_table, q.trig, q.new_row, q.old_row, coalesce(s.done_fns, '{}') AS done_fns,
          coalesce(s.attempts, 0) AS attempts, s.fn_id, s.cron_id,
          (SELECT functions_version FROM ${rppdTable(schema, 'rppd_wake')}) AS fv
     FROM ${rppdTable(schema, 'rppd_event_queue')} q
     LEFT JOIN ${rppdTable(schema, 'rppd_event_state')} s ON s.event_id = q.id
    WHERE ${where} ORDER BY q.id ${limit}`;

/** The next events after `afterId`, in id (capture) order. */
export async function readEventsAfter(db: pg.ClientBase | pg.Pool, schema: string, afterId: string, limit: number) {
  const { rows } = await queryPrepared<EventRow>(db, selectEventsSql(schema, 'q.id > $1', 'LIMIT $2'), [
    afterId,
    limit,
  ]);
  return rows;
}

/**
 * The sweep's statement: ids in ($1, $2] (events admitted earlier plus any that committed late),
 * the statement snapshot's xmin and a transaction id this statement assigns itself, for the
 * floor of later sweeps (dispatch/sweepFloor.ts).
 */
export const sweepIdsSql = (schema: string) =>
  `SELECT ARRAY(SELECT id FROM ${rppdTable(schema, 'rppd_event_queue')} WHERE id > $1 AND id <= $2 ORDER BY id)::text[] AS ids,
          txid_snapshot_xmin(txid_current_snapshot())::text AS xmin, txid_current()::text AS xid`;

export async function readEventIdsForSweep(
  db: pg.ClientBase | pg.Pool,
  schema: string,
  floor: string,
  cursor: string,
): Promise<{ ids: string[]; xmin: bigint; xid: bigint }> {
  const { rows } = await queryPrepared<{ ids: string[]; xmin: string; xid: string }>(db, sweepIdsSql(schema), [
    floor,
    cursor,
  ]);
  const row = rows[0]!;
  return { ids: row.ids, xmin: BigInt(row.xmin), xid: BigInt(row.xid) };
}

/** The cache of the queue's id sequence: above 1, ids are not handed out in time order across sessions. */
export async function queueSequenceCache(db: pg.ClientBase | pg.Pool, schema: string): Promise<number> {
  const { rows } = await db.query<{ cache: string | null }>(
    `SELECT s.seqcache::text AS cache FROM pg_catalog.pg_sequence s
      WHERE s.seqrelid = pg_catalog.pg_get_serial_sequence($1, 'id')::regclass`,
    [rppdTable(schema, 'rppd_event_queue')],
  );
  return Number(rows[0]?.cache ?? 1);
}

export async function readEventsByIds(db: pg.ClientBase | pg.Pool, schema: string, ids: string[]) {
  const { rows } = await queryPrepared<EventRow>(db, selectEventsSql(schema, 'q.id = ANY($1::bigint[])'), [ids]);
  return rows;
}

/** CTEs that delete events (`gone`) and their state rows. */
export const deleteEventsSql = (schema: string, ids: string, where = '') =>
  `gone AS (
     DELETE FROM ${rppdTable(schema, 'rppd_event_queue')} WHERE id = ANY(${ids}::bigint[]) ${where} RETURNING id),
   state AS (
     DELETE FROM ${rppdTable(schema, 'rppd_event_state')} WHERE event_id IN (SELECT id FROM gone))`;

export async function deleteEvents(db: pg.ClientBase, schema: string, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const { rows } = await queryPrepared<{ deleted: number }>(
    db,
    `WITH ${deleteEventsSql(schema, '$1')} SELECT count(*)::int AS deleted FROM gone`,
    [ids],
  );
  return rows[0]?.deleted ?? 0;
}

/**
 * Deletes finished events in one autocommitted statement, only while node `fence.nodeId`
 * holds the master lease of `fence.epoch` (leaseHeldSql, the same fence as holdsLease).
 * held = false: nothing was deleted, another master has taken over.
 */
export async function deleteEventsFenced(
  db: pg.ClientBase | pg.Pool,
  schema: string,
  ids: string[],
  fence: { nodeId: number; epoch: string },
): Promise<{ held: boolean; deleted: number }> {
  const { rows } = await queryPrepared<{ held: boolean; deleted: number }>(
    db,
    `WITH lease AS (${leaseHeldSql(schema, '$2', '$3')}),
     ${deleteEventsSql(schema, '$1', 'AND EXISTS (SELECT 1 FROM lease)')}
     SELECT EXISTS (SELECT 1 FROM lease) AS held, (SELECT count(*) FROM gone)::int AS deleted`,
    [ids, fence.nodeId, fence.epoch],
  );
  return rows[0] ?? { held: false, deleted: 0 };
}

/** Record functions that finished for events that still have others to run. */
export async function addDoneFunctions(
  db: pg.ClientBase,
  schema: string,
  done: { id: string; fns: number[] }[],
): Promise<void> {
  if (done.length === 0) return;
  await queryPrepared(
    db,
    `INSERT INTO ${rppdTable(schema, 'rppd_event_state')} AS s (event_id, done_fns)
     SELECT d.id, d.fns FROM jsonb_to_recordset($1::jsonb) AS d(id bigint, fns int[])
      WHERE EXISTS (SELECT 1 FROM ${rppdTable(schema, 'rppd_event_queue')} q WHERE q.id = d.id)
     ON CONFLICT (event_id) DO UPDATE SET done_fns = s.done_fns || excluded.done_fns`,
    [JSON.stringify(done)],
  );
}

/** Count of a retry (transient failures) with its reason, for operators. */
export async function recordAttempts(
  db: pg.ClientBase | pg.Pool,
  schema: string,
  attempts: { id: string; attempts: number; error: string }[],
): Promise<void> {
  if (attempts.length === 0) return;
  await queryPrepared(
    db,
    `INSERT INTO ${rppdTable(schema, 'rppd_event_state')} AS s (event_id, attempts, last_error)
     SELECT d.id, d.attempts, d.error FROM jsonb_to_recordset($1::jsonb) AS d(id bigint, attempts int, error text)
      WHERE EXISTS (SELECT 1 FROM ${rppdTable(schema, 'rppd_event_queue')} q WHERE q.id = d.id)
     ON CONFLICT (event_id) DO UPDATE SET attempts = greatest(s.attempts, excluded.attempts), last_error = excluded.last_error`,
    [JSON.stringify(attempts)],
  );
}

/** State rows whose event is gone (deleted by hand, or by a master that failed between the two). */
export async function deleteOrphanStates(db: pg.ClientBase | pg.Pool, schema: string): Promise<number> {
  const res = await db.query(
    `DELETE FROM ${rppdTable(schema, 'rppd_event_state')} s
      WHERE NOT EXISTS (SELECT 1 FROM ${rppdTable(schema, 'rppd_event_queue')} q WHERE q.id = s.event_id)`,
  );
  return res.rowCount ?? 0;
}

export async function countEvents(db: pg.ClientBase | pg.Pool, schema: string): Promise<number> {
  const { rows } = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${rppdTable(schema, 'rppd_event_queue')}`);
  return Number(rows[0]?.n ?? 0);
}

/**
 * Whether the lock PostgreSQL takes to serialise notifying commits (async.c:
 * LockSharedObject(DatabaseRelationId, InvalidOid, 0, AccessExclusiveLock), held through commit)
 * is held or waited for right now.
 */
export async function notifyLockBusy(db: pg.ClientBase | pg.Pool): Promise<boolean> {
  const { rows } = await queryPrepared<{ busy: boolean }>(
    db,
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks
      WHERE locktype = 'object' AND database = 0 AND classid = 'pg_catalog.pg_database'::regclass
        AND objid = 0) AS busy`,
  );
  return rows[0]?.busy ?? false;
}

/**
 * rppd_listen_lock(true): the session advisory lock a master holds while it waits for NOTIFY;
 * writers send a NOTIFY only while it is held (rppd_event()). false: a writer that sends none
 * is still in its transaction, try later.
 */
export async function takeListenLock(client: pg.ClientBase, schema: string): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>(`SELECT ${rppdTable(schema, 'rppd_listen_lock')}(true) AS ok`);
  return rows[0]?.ok === true;
}

/** Writers send no NOTIFY from now (the lock is also gone with the session). */
export async function releaseListenLock(client: pg.ClientBase, schema: string): Promise<void> {
  await client.query(`SELECT ${rppdTable(schema, 'rppd_listen_lock')}(false)`);
}

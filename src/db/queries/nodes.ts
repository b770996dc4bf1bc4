// Runtime SQL on rppd_config: registration, heartbeat and the master lease.
// Every time is the database clock (now()); no two machines' clocks are compared.
import type pg from 'pg';
import { quoteIdentIfNeeded, rppdTable } from '../ident.ts';
import { queryPrepared } from '../preparedStatements.ts';
import { SqlState } from '../sqlState.ts';

export interface NodeRow {
  id: number;
  host: string;
  host_name: string;
  active_since: Date | null;
  max_db_connections: number;
  master: boolean | null;
  heartbeat_at: Date | null;
  lease_until: Date | null;
  epoch: string | null;
  pid: number | null;
  /** active_since is set and not in the future */
  active: boolean;
  /** heartbeat younger than the staleness limit given to the query */
  alive: boolean;
}

const nodeColumns = `id, host, host_name, active_since, max_db_connections, master, heartbeat_at, lease_until, epoch, pid,
  (active_since IS NOT NULL AND active_since <= now()) AS active`;

export async function loadNodes(db: pg.ClientBase | pg.Pool, schema: string, staleMs: number): Promise<NodeRow[]> {
  const { rows } = await db.query<NodeRow>(
    `SELECT ${nodeColumns}, coalesce(heartbeat_at > now() - make_interval(secs => $1::float8 / 1000), false) AS alive
       FROM ${rppdTable(schema, 'rppd_config')} ORDER BY id`,
    [staleMs],
  );
  return rows;
}

export class NodeNameTaken extends Error {
  override name = 'NodeNameTaken';
  constructor(
    message: string,
    /** The other row's heartbeat: if it does not move, that node is gone. */
    readonly heartbeatAt: string,
  ) {
    super(message);
  }
}

/**
 * Insert or take over this node's row (same host_name). A row whose heartbeat is
 * fresh belongs to a running node: refuse rather than share it.
 */
export async function registerNode(
  db: pg.ClientBase,
  schema: string,
  node: { host: string; name: string; pid: number; version: string; staleMs: number },
): Promise<NodeRow> {
  const t = rppdTable(schema, 'rppd_config');
  await db.query('BEGIN');
  try {
    await db.query(`LOCK TABLE ${t} IN SHARE ROW EXCLUSIVE MODE`);
    const existing = await db.query<NodeRow>(
      `SELECT ${nodeColumns}, coalesce(heartbeat_at > now() - make_interval(secs => $3::float8 / 1000), false) AS alive
         FROM ${t} WHERE host_name = $1 OR host = $2`,
      [node.name, node.host, node.staleMs],
    );
    for (const row of existing.rows) {
      if (row.alive) {
        const what = row.host_name === node.name ? `name "${node.name}"` : `address ${node.host}`;
        throw new NodeNameTaken(
          `a running node (id ${row.id}, ${row.host_name} at ${row.host}) already uses the ${what}: give this node another --name or bind address`,
          String(row.heartbeat_at?.getTime()),
        );
      }
    }
    const byName = existing.rows.find((r) => r.host_name === node.name);
    // A stale row holding our address under another name gives the address up.
    for (const row of existing.rows) {
      if (row !== byName)
        await db.query(`UPDATE ${t} SET host = host || '#' || id, master = NULL WHERE id = $1`, [row.id]);
    }
    const { rows } = byName
      ? await db.query<NodeRow>(
          `UPDATE ${t} SET host = $2, pid = $3, version = $4, started_at = now(), heartbeat_at = now(),
                  master = NULL, lease_until = NULL, stats = NULL
            WHERE id = $1 RETURNING ${nodeColumns}, true AS alive`,
          [byName.id, node.host, node.pid, node.version],
        )
      : await db.query<NodeRow>(
          `INSERT INTO ${t} (host, host_name, pid, version, started_at, heartbeat_at)
           VALUES ($1, $2, $3, $4, now(), now()) RETURNING ${nodeColumns}, true AS alive`,
          [node.host, node.name, node.pid, node.version],
        );
    await db.query('COMMIT');
    const row = rows[0];
    if (!row) throw new Error('registration returned no row');
    return row;
  } catch (err) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** The master as the database sees it: its id, epoch and how long its lease still runs (database clock). */
export interface MasterInfo {
  id: number;
  epoch: string;
  leaseLeftMs: number;
}

/** Write our heartbeat and stats; returns whether our row exists and who is master now. */
export async function heartbeat(
  db: pg.ClientBase | pg.Pool,
  schema: string,
  id: number,
  stats: Record<string, unknown>,
): Promise<{ found: boolean; master: MasterInfo | null }> {
  const t = rppdTable(schema, 'rppd_config');
  const res = await db.query<{ found: boolean; master: MasterInfo | null }>(
    `WITH beat AS (UPDATE ${t} SET heartbeat_at = now(), stats = $2 WHERE id = $1 RETURNING id)
     SELECT EXISTS (SELECT 1 FROM beat) AS found,
            (SELECT json_build_object('id', m.id, 'epoch', m.epoch::text,
                    'leaseLeftMs', floor(extract(epoch FROM m.lease_until - now()) * 1000))
               FROM ${t} m WHERE m.master) AS master`,
    [id, JSON.stringify(stats)],
  );
  return res.rows[0] ?? { found: false, master: null };
}

/** The node holding master = true, if any (its lease may have run out and not yet been taken over). */
export async function currentMaster(db: pg.ClientBase | pg.Pool, schema: string): Promise<MasterInfo | null> {
  const { rows } = await db.query<MasterInfo>(
    `SELECT id, epoch::text AS epoch, floor(extract(epoch FROM lease_until - now()) * 1000)::float8 AS "leaseLeftMs"
       FROM ${rppdTable(schema, 'rppd_config')} WHERE master`,
  );
  return rows[0] ?? null;
}

/** The fence: a row while node `id` holds the lease of `epoch`, locked FOR KEY SHARE (see holdsLease). */
export function leaseHeldSql(schema: string, idParam: string, epochParam: string): string {
  return `SELECT 1 FROM ${rppdTable(schema, 'rppd_config')}
           WHERE id = ${idParam} AND master AND epoch = ${epochParam} AND lease_until >= now() FOR KEY SHARE`;
}

/**
 * The epoch fence of the master's writes, run inside their transaction: true while
 * this node holds the lease of this epoch. FOR KEY SHARE conflicts with a takeover
 * (which changes the UNIQUE `master` column) but not with renewals, so no other node
 * can become master until this transaction has committed.
 */
export async function holdsLease(db: pg.ClientBase, schema: string, id: number, epoch: string): Promise<boolean> {
  const { rows } = await queryPrepared(db, leaseHeldSql(schema, '$1', '$2'), [id, epoch]);
  return rows.length > 0;
}

/** A node as the master's dispatch sees it. */
export interface ClusterNodeRow {
  id: number;
  host: string;
  host_name: string;
  max_db_connections: number;
  active: boolean;
  /** heartbeat younger than the staleness limit (database clock) */
  alive: boolean;
  /** epoch milliseconds of heartbeat_at; compared only with itself (did it move?) */
  heartbeat: string | null;
  stats: Record<string, unknown> | null;
}

export async function loadClusterNodes(
  db: pg.ClientBase | pg.Pool,
  schema: string,
  staleMs: number,
): Promise<ClusterNodeRow[]> {
  const { rows } = await db.query<ClusterNodeRow>(
    `SELECT id, host, host_name, max_db_connections, stats,
            (active_since IS NOT NULL AND active_since <= now()) AS active,
            coalesce(heartbeat_at > now() - make_interval(secs => $1::float8 / 1000), false) AS alive,
            (extract(epoch FROM heartbeat_at) * 1000)::bigint::text AS heartbeat
       FROM ${rppdTable(schema, 'rppd_config')} ORDER BY id`,
    [staleMs],
  );
  return rows;
}

/** Tell every node that rppd_config changed (e.g. this node is ready to take work). */
export async function announceNodes(db: pg.ClientBase | pg.Pool, schema: string): Promise<void> {
  await db.query(`SELECT pg_notify('rppd_config', $1)`, [`${quoteIdentIfNeeded(schema)}.rppd_config`]);
}

export interface Lease {
  epoch: string;
  /** Milliseconds the lease is valid from the moment the query ran (database clock). */
  validMs: number;
}

/**
 * Take the lease if no live master holds it: a master whose lease ran out is
 * cleared first, then the UNIQUE constraint on `master` lets only one node win.
 */
export async function tryAcquireLease(
  db: pg.ClientBase,
  schema: string,
  id: number,
  leaseMs: number,
): Promise<Lease | null> {
  const t = rppdTable(schema, 'rppd_config');
  await db.query('BEGIN');
  try {
    // Look before writing: any UPDATE of `master`, even of no row, fires the rppd_config_changed
    // statement trigger, and a NOTIFY per try would wake every node every heartbeat.
    const { rows: seen } = await db.query<{ live: boolean; flagged: boolean }>(
      `SELECT coalesce(bool_or(lease_until >= now()), false) AS live, count(*) > 0 AS flagged FROM ${t} WHERE master`,
    );
    if (seen[0]?.live) {
      await db.query('COMMIT');
      return null;
    }
    if (seen[0]?.flagged) {
      await db.query(`UPDATE ${t} SET master = NULL WHERE master AND (lease_until IS NULL OR lease_until < now())`);
    }
    const { rows } = await db.query<{ epoch: string }>(
      `UPDATE ${t} SET master = true, lease_until = now() + make_interval(secs => $2::float8 / 1000),
              epoch = nextval(${quoteLiteralRegclass(schema, 'rppd_epoch_seq')})
        WHERE id = $1 AND active_since IS NOT NULL AND active_since <= now()
          AND NOT EXISTS (SELECT 1 FROM ${t} WHERE master)
        RETURNING epoch`,
      [id, leaseMs],
    );
    await db.query('COMMIT');
    return rows[0] ? { epoch: rows[0].epoch, validMs: leaseMs } : null;
  } catch (err) {
    await db.query('ROLLBACK').catch(() => undefined);
    if ((err as { code?: string }).code === SqlState.uniqueViolation) return null;
    throw err;
  }
}

/**
 * Renew our lease, and beat with the same write (the master's round is one UPDATE); false when we
 * no longer hold it (another node took over).
 */
export async function renewLease(
  db: pg.ClientBase | pg.Pool,
  schema: string,
  id: number,
  epoch: string,
  leaseMs: number,
  stats: Record<string, unknown>,
): Promise<boolean> {
  const res = await db.query(
    `UPDATE ${rppdTable(schema, 'rppd_config')}
        SET lease_until = now() + make_interval(secs => $3::float8 / 1000), heartbeat_at = now(), stats = $4
      WHERE id = $1 AND master AND epoch = $2 AND lease_until >= now()`,
    [id, epoch, leaseMs, JSON.stringify(stats)],
  );
  return (res.rowCount ?? 0) > 0;
}

export async function releaseLease(db: pg.ClientBase | pg.Pool, schema: string, id: number, epoch: string) {
  await db.query(
    `UPDATE ${rppdTable(schema, 'rppd_config')} SET master = NULL, lease_until = NULL WHERE id = $1 AND epoch = $2 AND master`,
    [id, epoch],
  );
}

export async function markStopped(db: pg.ClientBase | pg.Pool, schema: string, id: number) {
  await db.query(
    `UPDATE ${rppdTable(schema, 'rppd_config')} SET heartbeat_at = NULL, master = NULL, lease_until = NULL, stats = NULL WHERE id = $1`,
    [id],
  );
}

function quoteLiteralRegclass(schema: string, name: string): string {
  const qualified = `"${schema.replace(/"/g, '""')}"."${name}"`;
  return `'${qualified.replace(/'/g, "''")}'`;
}

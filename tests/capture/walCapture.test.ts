// Capture from the WAL (rppd 1.3.0): a table moves from the trigger to the schema's
// logical slot; the master writes its changes to the queue after the writer's commit,
// in commit order, with the row images the trigger would have written, and none is lost
// or captured twice when the master is killed or PostgreSQL restarts.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { writeWalTransactions } from '../../src/db/queries/wal.ts';
import { formatLsn, parseLsn } from '../../src/util/lsn.ts';
import { type Fixture, setupFixture, waitForMaster, waitForRows } from '../support/fixture.ts';
import { freePort } from '../support/pgServer.ts';
import type { RppdProcess } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';

// Records what the function saw: one sink row per run.
const recordJs = `export default async (event, ctx) => {
  await ctx.db.query('INSERT INTO sink (event_id, tbl, trig, k, new_row, old_row) VALUES ($1, $2, $3, $4, $5, $6)',
    [event.eventId, event.table, event.trig, JSON.stringify(event.key), JSON.stringify(event.new), JSON.stringify(event.old)]);
};`;

// Every type family whose text form json_populate_record has to turn back into the trigger's JSON.
const columns = `id int PRIMARY KEY, n numeric, t text, ts timestamptz, b bool, j jsonb, js json, ia int[], ta text[],
  pair pair, u uuid, by bytea, f float8, big bigint, d date, nul text, long text`;
const values = `(1, 12345678901234567890.125, 'quote " and \\ and ünï', '2026-12-02 21:17:14.123456+00', true,
  '{"a": [1, 2, {"b": null}], "c": "x"}', '{"kept":  "as written"}', '{1,NULL,3}', '{"a b","c,d",NULL}',
  ROW(7, 'seven'), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff', 1.5e-7, 9007199254740993, '2026-01-31', NULL,
  repeat('x', 20000))`;

interface SinkRow {
  event_id: string;
  tbl: string;
  trig: number;
  k: unknown;
  new_row: Record<string, unknown> | null;
  old_row: Record<string, unknown> | null;
}

describe('WAL capture', () => {
  let f: Fixture;
  let node: RppdProcess | null = null;
  const sink = (where = 'true') =>
    f.query<SinkRow>(`SELECT event_id, tbl, trig, k, new_row, old_row FROM sink WHERE ${where} ORDER BY id`);

  before(async () => {
    f = await setupFixture({
      pg: { settings: { wal_level: 'logical', max_wal_senders: 10, max_replication_slots: 10 } },
    });
    await f.db.query(`
      CREATE TYPE pair AS (n int, label text);
      CREATE TABLE sink (id serial PRIMARY KEY, event_id bigint, tbl text, trig int, k jsonb, new_row jsonb, old_row jsonb);
      CREATE TABLE by_trigger (${columns});
      CREATE TABLE by_wal (${columns});
      -- Stored out of line, uncompressed: an UPDATE that leaves it alone does not write it to the WAL again.
      ALTER TABLE by_trigger ALTER COLUMN long SET STORAGE EXTERNAL;
      ALTER TABLE by_wal ALTER COLUMN long SET STORAGE EXTERNAL;
      CREATE TABLE ordered (id int PRIMARY KEY, v text);
      CREATE TABLE kill_src (id int PRIMARY KEY);
      CREATE TRIGGER by_trigger_event AFTER INSERT OR UPDATE OR DELETE ON by_trigger FOR EACH ROW EXECUTE FUNCTION rppd_event();
      CREATE TRIGGER by_trigger_truncate AFTER TRUNCATE ON by_trigger FOR EACH STATEMENT EXECUTE FUNCTION rppd_event();
      CREATE TRIGGER by_wal_event AFTER INSERT OR UPDATE OR DELETE ON by_wal FOR EACH ROW EXECUTE FUNCTION rppd_event();
    `);
    for (const [table, topic] of [
      ['public.by_trigger', ''],
      ['public.by_wal', ''],
      ['public.ordered', ''],
      ['public.kill_src', '.id'],
    ]) {
      await f.db.query(
        `INSERT INTO rppd_function (schema_table, topic, code, checksum, lang, queue) VALUES ($1, $2, $3, 'na', 'js', true)`,
        [table, topic, recordJs],
      );
    }
  });
  after(async () => f?.close());

  test('a table moves to the WAL only once the publication and the slot exist, each step saying what is missing', async () => {
    await assert.rejects(
      f.db.query(`SELECT rppd_wal_capture('by_wal')`),
      /replication slot rppd_public_\w+ is missing/,
    );
    await assert.rejects(f.db.query('SELECT rppd_wal_slot()'), /publication rppd_public is missing/);
    await f.db.query('SELECT rppd_wal_prepare()');
    await f.db.query('BEGIN');
    await f.db.query('INSERT INTO ordered VALUES (0, $1)', ['a write first']);
    await assert.rejects(f.db.query('SELECT rppd_wal_slot()'), /transaction that has performed writes/);
    await f.db.query('ROLLBACK');
    const [slot] = await f.query<{ s: string }>('SELECT rppd_wal_slot() AS s');
    assert.match(slot?.s ?? '', /^rppd_public_[0-9a-f]{8}$/);
    const notices: string[] = [];
    const onNotice = (n: { message?: string }) => notices.push(n.message ?? '');
    f.db.on('notice', onNotice);
    for (const t of ['by_wal', 'ordered', 'kill_src']) await f.db.query('SELECT rppd_wal_capture($1)', [t]);
    f.db.off('notice', onNotice);
    assert.deepEqual(notices, ['rppd: dropped trigger by_wal_event on by_wal: its changes come from the WAL now']);
    const members = await f.query<{ tablename: string; ri: string }>(
      `SELECT p.tablename, c.relreplident AS ri FROM pg_publication_tables p JOIN pg_class c ON c.relname = p.tablename
        WHERE p.pubname = 'rppd_public' ORDER BY 1`,
    );
    assert.deepEqual(members, [
      { tablename: 'by_wal', ri: 'f' },
      { tablename: 'kill_src', ri: 'f' },
      { tablename: 'ordered', ri: 'f' },
    ]);
  });

  test('changes committed while no node runs are kept by the slot and run with the trigger’s row images', async () => {
    for (const t of ['by_trigger', 'by_wal']) {
      await f.db.query(`INSERT INTO ${t} VALUES ${values}`);
      await f.db.query(`UPDATE ${t} SET t = 'changed', ia = ia || 4 WHERE id = 1`);
      await f.db.query(`DELETE FROM ${t} WHERE id = 1`);
      await f.db.query(`TRUNCATE ${t}`);
    }
    // Only the trigger's events are in the queue: the WAL's wait in the slot.
    const queued = await f.query<{ schema_table: string; n: number }>(
      `SELECT schema_table, count(*)::int AS n FROM rppd_event_queue WHERE schema_table LIKE 'public.by_%' GROUP BY 1`,
    );
    assert.deepEqual(queued, [{ schema_table: 'public.by_trigger', n: 4 }]);

    const httpPort = await freePort();
    node = await f.startNode({ name: 'first', env: { RPPD_HTTP: `127.0.0.1:${httpPort}` } });
    await waitForMaster(node);
    await waitForRows(f, 'SELECT 1 FROM sink', 8);
    // The master's WAL capture in its metrics: the four changes of by_wal, each its own transaction.
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    assert.match(metrics, /^rppd_wal_streaming 1$/m);
    assert.match(metrics, /^rppd_wal_events_written_total 4$/m);
    assert.match(metrics, /^rppd_wal_transactions_written_total 4$/m);
    const writes = Number(/^rppd_wal_write_seconds_count (\d+)$/m.exec(metrics)?.[1]);
    assert.ok(writes >= 1 && writes <= 4, `${writes} writes for 4 transactions`);
    assert.match(metrics, /^rppd_wal_slot_lag_bytes \d+$/m);
    // Committed before the node started: every transaction's lag is past the lowest buckets.
    assert.match(metrics, /^rppd_wal_received_lag_seconds_count 4$/m);
    assert.match(metrics, /^rppd_wal_written_lag_seconds_count 4$/m);
    assert.match(metrics, /^rppd_wal_written_lag_seconds_bucket\{le="0.01"\} 0$/m);
    const byTrigger = await sink(`tbl = 'public.by_trigger'`);
    const byWal = await sink(`tbl = 'public.by_wal'`);
    assert.deepEqual(
      byWal.map((r) => r.trig),
      [1, 0, 2, 3],
    );
    for (const [i, w] of byWal.entries()) {
      const t = byTrigger[i];
      assert.deepEqual({ ...w, event_id: '', tbl: '' }, { ...t, event_id: '', tbl: '' }, `event ${i} (trig ${w.trig})`);
    }
    // Spot checks that the comparison compares something.
    const inserted = byWal[0]?.new_row ?? {};
    assert.deepEqual(inserted.j, { a: [1, 2, { b: null }], c: 'x' });
    assert.deepEqual(inserted.ia, [1, null, 3]);
    assert.deepEqual(inserted.pair, { n: 7, label: 'seven' });
    assert.equal(inserted.ts, '2026-12-02T21:17:14.123456+00:00');
    assert.equal((inserted.long as string).length, 20000);
    // The UPDATE left the TOASTed column unchanged: REPLICA IDENTITY FULL still brings it.
    assert.equal(String(byWal[1]?.new_row?.long).length, 20000);
    assert.equal(byWal[2]?.old_row?.t, 'changed');
  });

  test('events run in commit order, not in the order the writes began', async () => {
    const other = new pg.Client({ connectionString: f.url });
    await other.connect();
    try {
      await f.db.query('BEGIN');
      await f.db.query(`INSERT INTO ordered VALUES (1, 'began first, committed second')`);
      await other.query(`INSERT INTO ordered VALUES (2, 'began second, committed first')`);
      await f.db.query('COMMIT');
      // Two tables in one transaction: one INSERT for both row types, in the transaction's order.
      await other.query(
        `BEGIN; INSERT INTO ordered VALUES (3, 'one'); INSERT INTO kill_src VALUES (-1);
         INSERT INTO ordered VALUES (4, 'transaction'); COMMIT`,
      );
    } finally {
      await other.end();
    }
    const rows = await waitForRows<SinkRow>(
      f,
      `SELECT event_id, new_row FROM sink WHERE tbl = 'public.ordered' ORDER BY id`,
      4,
    );
    assert.deepEqual(
      rows.map((r) => r.new_row?.id),
      [2, 1, 3, 4],
    );
    const ids = rows.map((r) => BigInt(r.event_id));
    assert.deepEqual(
      ids,
      [...ids].sort((a, b) => (a < b ? -1 : 1)),
      'queue ids follow commit order',
    );
    const [between] = await waitForRows<{ event_id: string }>(
      f,
      `SELECT event_id FROM sink WHERE tbl = 'public.kill_src' AND k = '{"id": -1}'`,
      1,
    );
    assert.ok(
      BigInt(between!.event_id) > ids[2]! && BigInt(between!.event_id) < ids[3]!,
      'kill_src -1 between 3 and 4',
    );
  });

  test('a burst larger than the dispatcher window keeps every key in commit order, each event once', async () => {
    // The master hands events it wrote straight to the dispatcher while the window has room and
    // leaves the rest to the dispatcher's reads: both paths, one order.
    await f.db.query(`CREATE TABLE burst (id int PRIMARY KEY, k int); SELECT rppd_wal_capture('burst')`);
    // Two keys, 2 ms a run: the burst fills the window (2,000 events) and keeps it full, so the
    // single-row commits after it are written while older events still wait in the table.
    const slowRecordJs = recordJs.replace(
      'async (event, ctx) => {',
      'async (event, ctx) => { await new Promise((r) => setTimeout(r, 2));',
    );
    await f.db.query(
      `INSERT INTO rppd_function (schema_table, topic, code, checksum, lang, queue) VALUES ('public.burst', '.k', $1, 'na', 'js', true)`,
      [slowRecordJs],
    );
    const keys = 2;
    let id = 0;
    for (let t = 0; t < 25; t++, id += 100) {
      await f.db.query(`INSERT INTO burst SELECT g, g % ${keys} FROM generate_series($1::int, $2::int) g`, [
        id,
        id + 99,
      ]);
    }
    for (let end = id + 300; id < end; id++) await f.db.query(`INSERT INTO burst VALUES ($1, $1 % ${keys})`, [id]);
    const rows = await waitForRows<{ id: number; k: number; n: number }>(
      f,
      `SELECT (new_row->>'id')::int AS id, (new_row->>'k')::int AS k, count(*) OVER (PARTITION BY new_row->>'id')::int AS n
         FROM sink WHERE tbl = 'public.burst' ORDER BY sink.id`,
      id,
      [],
      120_000,
    );
    assert.equal(rows.length, id);
    assert.deepEqual(
      rows.filter((r) => r.n !== 1),
      [],
      'each change ran once',
    );
    const last = new Map<number, number>();
    const outOfOrder = rows.filter((r) => {
      const before = last.get(r.k) ?? -1;
      last.set(r.k, r.id);
      return r.id < before;
    });
    assert.deepEqual(outOfOrder, [], 'each key in commit order');
  });

  test('a master killed mid-stream, and a PostgreSQL crash restart, lose no change and capture none twice', async () => {
    const total = 600;
    const write = async (from: number, to: number) => {
      for (let i = from; i < to; i += 50) {
        await f.db.query('INSERT INTO kill_src SELECT g FROM generate_series($1::int, $2::int) g', [
          i,
          Math.min(i + 49, to - 1),
        ]);
      }
    };
    await write(0, total / 2);
    await waitForRows(f, `SELECT 1 FROM sink WHERE tbl = 'public.kill_src' AND k <> '{"id": -1}'`, 20);
    await node?.kill('SIGKILL');
    await write(total / 2, total);
    node = await f.startNode({ name: 'second' });
    await waitForMaster(node);
    await waitForRows(
      f,
      `SELECT DISTINCT k FROM sink WHERE tbl = 'public.kill_src' AND k <> '{"id": -1}'`,
      total / 2 + 10,
    );
    await f.server.restart('immediate');
    await f.db.end().catch(() => undefined);
    f.db = new pg.Client({ connectionString: f.url });
    await f.db.connect();
    f.db.on('error', () => undefined);
    await f.db.query(`INSERT INTO kill_src SELECT g FROM generate_series(${total}, ${total + 9}) g`);
    const keys = await waitForRows<{ k: { id: number } }>(
      f,
      `SELECT DISTINCT k FROM sink WHERE tbl = 'public.kill_src' AND k <> '{"id": -1}'`,
      total + 10,
      [],
      120_000,
    );
    assert.equal(keys.length, total + 10);
    // A run may be repeated after a kill (the same event id); an event captured twice would have two ids.
    const twice = await f.query(
      `SELECT k FROM sink WHERE tbl = 'public.kill_src' GROUP BY k HAVING count(DISTINCT event_id) > 1`,
    );
    assert.deepEqual(twice, []);
    // The stream's position is stored, and confirmed to the slot once the WAL is flushed past the
    // write (it commits asynchronously), so the slot lets old WAL go.
    await waitFor(
      async () => {
        const [pos] = await f.query<{ stored: boolean; confirmed: boolean }>(
          `SELECT w.lsn > '0/0' AS stored, s.confirmed_flush_lsn >= w.lsn AS confirmed
             FROM rppd_wal_position w, pg_replication_slots s WHERE s.slot_name = (rppd_wal_names()).slot`,
        );
        return pos?.stored && pos.confirmed;
      },
      { what: 'the stored position confirmed to the slot' },
    );
  });

  test('a transaction at or below the stored position is not written again (a restart before the slot heard the ack)', async () => {
    // No master: it would take these events (no function wants them) off the queue.
    await node?.kill('SIGKILL');
    const db = new pg.Client({ connectionString: f.url });
    await db.connect();
    try {
      const [before] = await f.query<{ lsn: string }>('SELECT lsn::text FROM rppd_wal_position');
      const next = parseLsn(before?.lsn ?? '0/0') + 1n;
      // A committed transaction's id, as pgoutput sends it (32 bits).
      const [done] = await f.query<{ xid: string }>('SELECT (txid_current() % 4294967296)::text AS xid');
      const txn = (id: number, lsn: bigint, xid = Number(done!.xid)) => ({
        xid,
        endLsn: lsn,
        endLsnText: formatLsn(lsn),
        events: [
          {
            rowType: '"public"."ordered"',
            schemaTable: 'public.dedupe',
            trig: 1,
            newRow: `{"id":${id}}`,
            oldRow: null,
          },
        ],
      });
      const counts = ({ written, skipped, raw }: { written: number; skipped: number; raw: unknown[] }) => ({
        written,
        skipped,
        raw: raw.length,
      });
      const first = await writeWalTransactions(db, 'public', [txn(100, next)], { returnRows: true });
      assert.deepEqual(counts(first), { written: 1, skipped: 0, raw: 0 });
      // Asked for, the written events come back as the dispatcher would read them.
      assert.equal(first.rows.length, 1);
      const [back] = await f.query<{ id: string; fv: string }>(
        `SELECT q.id, (SELECT functions_version FROM rppd_wake)::text AS fv FROM rppd_event_queue q
          WHERE schema_table = 'public.dedupe'`,
      );
      const { id, schema_table, trig, new_row, old_row, done_fns, attempts, fn_id, cron_id, fv } = first.rows[0]!;
      assert.deepEqual(
        { id, schema_table, trig, new_row, old_row, done_fns, attempts, fn_id, cron_id, fv },
        {
          id: back!.id,
          schema_table: 'public.dedupe',
          trig: 1,
          new_row: { id: 100, v: null },
          old_row: null,
          done_fns: [],
          attempts: 0,
          fn_id: null,
          cron_id: null,
          fv: back!.fv,
        },
      );
      // Told a position below the stored one (a stream that did not see the last write): still
      // skipped, by the locked path, which leaves the events to the dispatcher to read.
      const again = await writeWalTransactions(db, 'public', [txn(100, next), txn(101, next + 1n)], {
        known: next - 1n,
        returnRows: true,
      });
      assert.deepEqual(counts(again), { written: 1, skipped: 1, raw: 0 });
      assert.equal(again.position, next + 1n);
      assert.equal(again.rows.length, 0);
      // A row type that no longer takes the values: kept with its text values, not lost.
      const altered = { ...txn(102, next + 2n) };
      altered.events = [{ ...altered.events[0]!, rowType: '"public"."no_such_table"' }];
      const kept = await writeWalTransactions(db, 'public', [altered]);
      assert.equal(kept.written, 1);
      assert.equal(kept.raw.length, 1);
      // A transaction decoded from the WAL before other sessions can see it (its commit record is
      // flushed first): not written until it is, or a function would not find its row.
      const open = new pg.Client({ connectionString: f.url });
      await open.connect();
      try {
        await open.query('BEGIN');
        const [{ xid }] = (await open.query<{ xid: string }>('SELECT (txid_current() % 4294967296)::text AS xid'))
          .rows as [{ xid: string }];
        const early = txn(103, next + 3n, Number(xid));
        const waiting = await writeWalTransactions(db, 'public', [early], { known: next + 2n });
        assert.equal(waiting.notVisible, true);
        assert.equal(waiting.written, 0);
        assert.equal((await writeWalTransactions(db, 'public', [early])).notVisible, true, 'the locked path waits too');
        await open.query('COMMIT');
        assert.equal((await writeWalTransactions(db, 'public', [early], { known: next + 2n })).written, 1);
      } finally {
        await open.end();
      }
      const rows = await f.query<{ new_row: { id: number } }>(
        `SELECT new_row FROM rppd_event_queue WHERE schema_table = 'public.dedupe' ORDER BY id`,
      );
      assert.deepEqual(
        rows.map((r) => r.new_row.id),
        [100, 101, 102, 103],
      );
      await f.db.query(`DELETE FROM rppd_event_queue WHERE schema_table = 'public.dedupe'`);
    } finally {
      await db.end();
      node = await f.startNode({ name: 'third' });
      await waitForMaster(node);
    }
  });

  test('a table moves back to the trigger with no change lost', async () => {
    await f.db.query(
      `BEGIN; SELECT rppd_wal_capture('ordered', false); INSERT INTO ordered VALUES (5, 'by trigger'); COMMIT`,
    );
    const triggers = await f.query<{ tgname: string }>(
      `SELECT tgname FROM pg_trigger WHERE tgrelid = 'ordered'::regclass AND NOT tgisinternal ORDER BY 1`,
    );
    assert.deepEqual(
      triggers.map((t) => t.tgname),
      ['rppd_event', 'rppd_event_truncate'],
    );
    const rows = await waitForRows<SinkRow>(f, `SELECT new_row FROM sink WHERE tbl = 'public.ordered' ORDER BY id`, 5);
    assert.equal(rows[4]?.new_row?.v, 'by trigger');
    await waitFor(async () => (await f.query('SELECT 1 FROM rppd_event_queue')).length === 0, { what: 'queue empty' });
    assert.equal(rows.length, 5);
  });
});

describe('WAL capture on a server without wal_level = logical', () => {
  let f: Fixture;
  before(async () => {
    f = await setupFixture();
    await f.db.query('CREATE TABLE t (id int PRIMARY KEY)');
  });
  after(async () => f?.close());

  test('says what to change and leaves the table on its trigger', async () => {
    await assert.rejects(
      f.db.query('SELECT rppd_wal_prepare()'),
      /WAL capture needs wal_level = logical \(it is replica\)/,
    );
    await assert.rejects(f.db.query(`SELECT rppd_wal_capture('t')`), /wal_level = logical/);
    const pubs = await f.query('SELECT 1 FROM pg_publication');
    assert.deepEqual(pubs, []);
  });
});

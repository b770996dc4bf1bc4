// Delivery: events are recorded in the writer's transaction, run after commit,
// survive the node being down or SIGKILLed, and are never silently dropped.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture, waitForMaster, waitForRows } from '../support/fixture.ts';
import { waitFor } from '../support/waitFor.ts';

const recordCode = `cur = DB.cursor()
cur.execute("INSERT INTO seen (src_id, trig, new_v, old_v) VALUES (%s, %s, %s, %s)",
            (PK[0] if PK else None, TRIG, (NEW or {}).get('v'), (OLD or {}).get('v')))
DB.commit()
`;

describe('delivery', () => {
  let f: Fixture;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE src (id serial PRIMARY KEY, v text);
      CREATE TABLE seen (id serial PRIMARY KEY, src_id int, trig int, new_v text, old_v text);
      CREATE TRIGGER src_event AFTER INSERT OR UPDATE OR DELETE ON src FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      CREATE TRIGGER src_truncate AFTER TRUNCATE ON src FOR EACH STATEMENT EXECUTE PROCEDURE rppd_event();
      CREATE TABLE slow_src (id serial PRIMARY KEY, v text);
      CREATE TABLE slow_sink (id serial PRIMARY KEY, src_id int);
      CREATE TRIGGER slow_event AFTER INSERT ON slow_src FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await f.db.query(`INSERT INTO rppd_function (code, checksum, schema_table) VALUES ($1, 'na', 'public.src')`, [
      recordCode,
    ]);
  });
  after(async () => f?.close());

  test('with no node running, writes succeed and events wait in the table', async () => {
    await f.db.query(`INSERT INTO src (v) VALUES ('while down 1'), ('while down 2')`);
    // Rolled back: no event.
    await f.db.query('BEGIN');
    await f.db.query(`INSERT INTO src (v) VALUES ('rolled back')`);
    await f.db.query('ROLLBACK');
    // The original's ignore flag: nothing recorded.
    await f.db.query(`SET rppd.node = 'local'`);
    await f.db.query(`INSERT INTO src (v) VALUES ('local only')`);
    await f.db.query('RESET rppd.node');
    const queued = await f.query<{ trig: number; v: string }>(
      `SELECT trig, new_row->>'v' AS v FROM rppd_event_queue WHERE schema_table = 'public.src' ORDER BY id`,
    );
    assert.deepEqual(
      queued.map((q) => q.v),
      ['while down 1', 'while down 2'],
    );
  });

  test('events committed while no node ran are run after start', async () => {
    const node = await f.startNode({ name: 'first' });
    await waitForMaster(node);
    const seen = await waitForRows<{ new_v: string }>(f, 'SELECT new_v FROM seen ORDER BY id', 2);
    assert.deepEqual(
      seen.map((s) => s.new_v),
      ['while down 1', 'while down 2'],
    );
    await waitFor(async () => (await f.query('SELECT 1 FROM rppd_event_queue')).length === 0, { what: 'queue empty' });
    await node.kill('SIGTERM');
    const exit = await node.exited;
    assert.equal(exit.code, 0);
    // Nothing ran for the rolled-back or the 'local' rows.
    const all = await f.query<{ new_v: string }>('SELECT new_v FROM seen');
    assert.ok(!all.some((r) => r.new_v === 'rolled back' || r.new_v === 'local only'));
  });

  test('update, delete and truncate: TRIG and row images (a DELETE handler sees the deleted row)', async () => {
    const node = await f.startNode({ name: 'second' });
    await waitForMaster(node);
    await f.db.query('DELETE FROM seen');
    await f.db.query(`UPDATE src SET v = 'changed' WHERE id = 1`);
    await f.db.query('DELETE FROM src WHERE id = 2');
    await f.db.query('TRUNCATE src');
    const rows = await waitForRows<{ trig: number; src_id: number | null; new_v: string | null; old_v: string | null }>(
      f,
      'SELECT trig, src_id, new_v, old_v FROM seen ORDER BY id',
      3,
    );
    assert.deepEqual(rows, [
      { trig: 0, src_id: 1, new_v: 'changed', old_v: 'while down 1' },
      { trig: 2, src_id: 2, new_v: null, old_v: 'while down 2' },
      { trig: 3, src_id: null, new_v: null, old_v: null },
    ]);
    await node.kill('SIGTERM');
  });

  test('SIGKILL mid-run and restart: every event runs, at most the in-flight one twice', async () => {
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, queue) VALUES ($1, 'na', 'public.slow_src', true)`,
      [
        `import time
time.sleep(0.3)
cur = DB.cursor()
cur.execute("INSERT INTO slow_sink (src_id) VALUES (%s)", (ID,))
DB.commit()`,
      ],
    );
    const node = await f.startNode({ name: 'victim' });
    await waitForMaster(node);
    for (let i = 0; i < 12; i++) await f.db.query(`INSERT INTO slow_src (v) VALUES ($1)`, [`e${i}`]);
    await waitForRows(f, 'SELECT 1 FROM slow_sink', 3);
    await node.kill('SIGKILL');
    const done = (await f.query('SELECT 1 FROM slow_sink')).length;
    assert.ok(done < 12, 'killed before the end');
    const again = await f.startNode({ name: 'victim' });
    await waitForMaster(again);
    await waitFor(async () => (await f.query('SELECT 1 FROM rppd_event_queue')).length === 0, {
      what: 'all slow events finished',
    });
    const sink = await f.query<{ src_id: number; n: string }>(
      'SELECT src_id, count(*) AS n FROM slow_sink GROUP BY src_id ORDER BY src_id',
    );
    assert.equal(sink.length, 12, 'every event has its sink row');
    const duplicates = sink.filter((s) => Number(s.n) > 1).length;
    assert.ok(duplicates <= 1, `only the run in flight at the kill may repeat (got ${duplicates})`);
    // queue = true: sink rows in source order
    const order = await f.query<{ src_id: number }>('SELECT src_id FROM slow_sink ORDER BY id');
    const firstSeen = [...new Set(order.map((o) => o.src_id))];
    assert.deepEqual(
      firstSeen,
      [...firstSeen].sort((a, b) => a - b),
    );
    await again.kill('SIGTERM');
  });
});

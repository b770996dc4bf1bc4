// The seed's Python samples and the original's sample flows (spec §12: S2, S3, S7)
// run unchanged against a real node process and a real PostgreSQL.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture, waitForRows } from '../support/fixture.ts';
import { waitFor } from '../support/waitFor.ts';

const seedSample1 = `sql = "SELECT * FROM {} where a = %s".format(TABLE)
print(sql)

cur = DB.cursor()
cur.execute(sql, (PK))
print(cur.fetchall())

cur.execute("insert into test (b) values (%s)", ( "{}-{}".format(TOPIC, TRIG),))
DB.commit()
`;

const seedSample2 = `cur = DB.cursor()
cur.execute("SELECT * FROM {} ".format(TABLE))
print(cur.fetchall())
`;

const s2Code = `cur = DB.cursor()
cur.execute("select input from test_source where id = %s", (ID,))
row = cur.fetchone()
cur.execute("insert into test_sink (data) values (%s)", (row[0],))
DB.commit()
`;

describe('seed samples and original flows', () => {
  let f: Fixture;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE seed_src (a int PRIMARY KEY, v text);
      CREATE TABLE test (id serial PRIMARY KEY, b text);
      CREATE TRIGGER seed_src_event AFTER INSERT OR UPDATE OR DELETE ON seed_src FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      CREATE TABLE seed2 (id serial PRIMARY KEY, v text);
      CREATE TRIGGER seed2_event AFTER INSERT OR UPDATE OR DELETE ON seed2 FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      CREATE TABLE test_source (id serial PRIMARY KEY, input text);
      CREATE TABLE test_sink (id serial PRIMARY KEY, data text);
      CREATE TRIGGER test_src_event AFTER INSERT OR UPDATE OR DELETE ON test_source FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      CREATE TABLE s7 (id serial PRIMARY KEY, v text);
      CREATE TRIGGER s7_event AFTER INSERT OR UPDATE OR DELETE ON s7 FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      CREATE TABLE js_src (id bigserial PRIMARY KEY, input text);
      CREATE TABLE js_sink (id serial PRIMARY KEY, src_id bigint, data text);
      CREATE TRIGGER js_src_event AFTER INSERT OR UPDATE OR DELETE ON js_src FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await f.startNode();
  });
  after(async () => f?.close());

  test('seed sample 1: TABLE, PK, TOPIC, TRIG; insert then update', async () => {
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, topic, fn_logging) VALUES ($1, 'na', 'public.seed_src', '', true)`,
      [seedSample1],
    );
    await f.db.query(`INSERT INTO seed_src (a, v) VALUES (7, 'seven')`);
    const rows = await waitForRows<{ b: string }>(f, 'SELECT b FROM test ORDER BY id', 1);
    assert.equal(rows[0]!.b, '-1');
    const [log] = await waitForRows<{ output: string; error_msg: string | null }>(
      f,
      `SELECT l.output, l.error_msg FROM rppd_function_log l JOIN rppd_function f ON f.id = l.fn_id WHERE f.schema_table = 'public.seed_src'`,
      1,
    );
    assert.equal(log!.error_msg, null);
    assert.match(log!.output, /SELECT \* FROM public\.seed_src where a = %s/);
    assert.match(log!.output, /\(7, 'seven'\)/);
    await f.db.query(`UPDATE seed_src SET v = 'SEVEN' WHERE a = 7`);
    const rows2 = await waitForRows<{ b: string }>(f, 'SELECT b FROM test ORDER BY id', 2);
    assert.equal(rows2[1]!.b, '-0');
  });

  test('seed sample 2: reads the whole table and prints it', async () => {
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, fn_logging) VALUES ($1, 'na', 'public.seed2', true)`,
      [seedSample2],
    );
    await f.db.query(`INSERT INTO seed2 (v) VALUES ('x'), ('y')`);
    const logs = await waitForRows<{ output: string }>(
      f,
      `SELECT l.output FROM rppd_function_log l JOIN rppd_function f ON f.id = l.fn_id WHERE f.schema_table = 'public.seed2' ORDER BY l.id`,
      2,
    );
    // Runs after commit: both rows of the one INSERT statement are visible already.
    assert.match(logs[0]!.output, /\[\(1, 'x'\), \(2, 'y'\)\]/);
  });

  test('S2: the function reads the new row by ID (no sleep needed) and writes the sink', async () => {
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, topic) VALUES ($1, 'na', 'public.test_source', '.id')`,
      [s2Code],
    );
    await f.db.query(`INSERT INTO test_source (input) VALUES ('test input')`);
    const rows = await waitForRows<{ data: string }>(f, 'SELECT data FROM test_sink', 1);
    assert.deepEqual(
      rows.map((r) => r.data),
      ['test input'],
    );
  });

  test('S3: TOPIC and TRIG for an update on a .id topic', async () => {
    await f.db.query(`CREATE TABLE s3 (a int PRIMARY KEY, v text);
      CREATE TRIGGER s3_event AFTER INSERT OR UPDATE OR DELETE ON s3 FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      INSERT INTO s3 VALUES (1, 'before');`);
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, topic) VALUES ($1, 'na', 'public.s3', '.id')`,
      [seedSample1],
    );
    await f.db.query(`UPDATE s3 SET v = 'after' WHERE a = 1`);
    await waitForRows(f, `SELECT b FROM test WHERE b = '.id-0'`, 1);
  });

  test('S7: fn_logging captures print; a raising function records its error', async () => {
    const [{ id: ok }] = (await f.query<{ id: number }>(
      `INSERT INTO rppd_function (code, checksum, schema_table, topic, fn_logging) VALUES ('print("hello")', 'na', 'public.s7', '.id', true) RETURNING id`,
    )) as [{ id: number }];
    const [{ id: bad }] = (await f.query<{ id: number }>(
      `INSERT INTO rppd_function (code, checksum, schema_table, topic, verbose_debug, priority) VALUES ('x = 1\nraise ValueError("boom " + str(ID))', 'na', 'public.s7', '.id', true, 2) RETURNING id`,
    )) as [{ id: number }];
    await f.db.query(`INSERT INTO s7 (v) VALUES ('one')`);
    const [okLog] = await waitForRows<{ took_ms: string; output: string; error_msg: string | null; trig_type: number }>(
      f,
      'SELECT took_ms, output, error_msg, trig_type FROM rppd_function_log WHERE fn_id = $1',
      1,
      [ok],
    );
    assert.equal(okLog!.output, 'hello\n');
    assert.equal(okLog!.error_msg, null);
    assert.equal(okLog!.trig_type, 1);
    assert.ok(Number(okLog!.took_ms) >= 0);
    // Failed runs are always recorded, with fn_logging or not.
    const [badLog] = await waitForRows<{ error_msg: string; took_ms: string }>(
      f,
      'SELECT error_msg, took_ms FROM rppd_function_log WHERE fn_id = $1',
      1,
      [bad],
    );
    assert.match(badLog!.error_msg, /^ValueError: boom 1/);
    assert.match(badLog!.error_msg, /on run \[public\.s7\]@\.id:/);
    assert.match(badLog!.error_msg, /raise ValueError/, 'verbose_debug adds the code');
    // The event is finished (failure recorded), not stuck.
    await waitFor(
      async () => (await f.query(`SELECT 1 FROM rppd_event_queue WHERE schema_table = 'public.s7'`)).length === 0,
      {
        what: 's7 events finished',
      },
    );
  });

  test('S7: cleanup_logs_min deletes old log rows', async () => {
    const [{ id }] = (await f.query<{ id: number }>(
      `INSERT INTO rppd_function (code, checksum, schema_table, fn_logging, cleanup_logs_min) VALUES ('print(1)', 'na', 'public.s7', true, 1) RETURNING id`,
    )) as [{ id: number }];
    await f.db.query(`INSERT INTO s7 (v) VALUES ('two')`);
    await waitForRows(f, 'SELECT 1 FROM rppd_function_log WHERE fn_id = $1', 1, [id]);
    await f.db.query(`UPDATE rppd_function_log SET started_at = now() - interval '2 minutes' WHERE fn_id = $1`, [id]);
    await waitFor(async () => (await f.query('SELECT 1 FROM rppd_function_log WHERE fn_id = $1', [id])).length === 0, {
      what: 'old log rows deleted',
    });
  });

  test('a JavaScript and a TypeScript function read the source row and write the sink', async () => {
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, topic, lang) VALUES ($1, 'na', 'public.js_src', '.id', 'js'), ($2, 'na', 'public.js_src', '', 'ts')`,
      [
        `export default async (event, ctx) => {
           const { rows } = await ctx.db.query('SELECT input FROM js_src WHERE id = $1', [event.key.id]);
           await ctx.db.query('INSERT INTO js_sink (src_id, data) VALUES ($1, $2)', [event.key.id, 'js:' + rows[0].input]);
         };`,
        `interface Ev { key: { id: string | number }; op: string; new: { input: string } | null }
         export default async (event: Ev, ctx: { db: { query(t: string, p?: unknown[]): Promise<unknown> } }): Promise<void> => {
           await ctx.db.query('INSERT INTO js_sink (src_id, data) VALUES ($1, $2)', [event.key.id, 'ts:' + event.op + ':' + event.new?.input]);
         };`,
      ],
    );
    await f.db.query(`INSERT INTO js_src (input) VALUES ('hi')`);
    const rows = await waitForRows<{ data: string }>(f, 'SELECT data FROM js_sink ORDER BY data', 2);
    assert.deepEqual(
      rows.map((r) => r.data),
      ['js:hi', 'ts:INSERT:hi'],
    );
  });
});

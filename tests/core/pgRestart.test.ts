// PostgreSQL restarted under a running node (crash restart): the node reconnects
// (pool, LISTEN connection, runtime connections) and nothing is lost.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type Fixture, setupFixture, waitForMaster } from '../support/fixture.ts';
import { waitFor } from '../support/waitFor.ts';

describe('PostgreSQL restart', () => {
  let f: Fixture;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE r_src (id serial PRIMARY KEY, v text);
      CREATE TABLE r_sink (id serial PRIMARY KEY, src_id int, lang text);
      CREATE TRIGGER r_event AFTER INSERT ON r_src FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      INSERT INTO rppd_function (code, checksum, schema_table, topic, lang) VALUES
        ('cur = DB.cursor()' || chr(10) || 'cur.execute("INSERT INTO r_sink (src_id, lang) VALUES (%s, %s)", (ID, "py"))' || chr(10) || 'DB.commit()', 'na', 'public.r_src', '.id', 'python'),
        ('export default async (e, ctx) => { await ctx.db.query("INSERT INTO r_sink (src_id, lang) VALUES ($1, $2)", [e.key.id, "js"]); }', 'na', 'public.r_src', '.id', 'js');`);
    await waitForMaster(await f.startNode());
  });
  after(async () => f?.close());

  test('events before, during and after a crash restart all run', async () => {
    const insert = async (n: number) => {
      for (let i = 0; i < n; i++) await f.db.query(`INSERT INTO r_src (v) VALUES ('x')`);
    };
    await insert(20);
    await f.server.restart('immediate');
    // The test's own connection died with the server.
    await f.db.end().catch(() => undefined);
    f.db = new pg.Client(f.url);
    await f.db.connect();
    await insert(20);
    const expected = 40;
    await waitFor(
      async () => {
        const { rows } = await f.db.query<{ n: number }>('SELECT count(DISTINCT (src_id, lang))::int AS n FROM r_sink');
        return rows[0]!.n === expected * 2;
      },
      { what: 'every event ran both functions', timeoutMs: 120_000 },
    );
    const missing = await f.query(
      `SELECT s.id FROM r_src s WHERE (SELECT count(DISTINCT lang) FROM r_sink k WHERE k.src_id = s.id) < 2`,
    );
    assert.deepEqual(missing, []);
    await waitFor(async () => (await f.query('SELECT 1 FROM rppd_event_queue')).length === 0, { what: 'queue empty' });
  });
});

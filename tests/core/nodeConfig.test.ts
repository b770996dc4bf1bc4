// The node's settings and live configuration: usage errors, a database that is
// not there yet, and config-row changes reaching the running node.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture, waitForMaster, waitForRows } from '../support/fixture.ts';
import { freePort, startPg } from '../support/pgServer.ts';
import { spawnRppd } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';

describe('rppd start: arguments', () => {
  test('an unknown argument is a one-line error with the usage and exit code 2', async () => {
    const p = spawnRppd(['start', 'public', '--frobnicate']);
    const exit = await p.exited;
    assert.equal(exit.code, 2);
    const err = p.stderr.join('');
    assert.match(err.split('\n')[0]!, /--frobnicate/);
    assert.match(err, /Usage/);
  });

  test('two database URLs contradict each other: exit code 2 naming the argument', async () => {
    const p = spawnRppd(['start', 'postgres://a@localhost/x', 'postgres://b@localhost/y']);
    assert.equal((await p.exited).code, 2);
    assert.match(p.stderr.join('').split('\n')[0]!, /postgres:\/\/b@localhost\/y/);
  });

  test('a database that is not reachable yet: the node logs why, retries, then starts', async () => {
    const port = await freePort();
    const nodePort = await freePort();
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    const p = spawnRppd(['start', url, `127.0.0.1:${nodePort}`, '--name=early'], { RPPD_PYTHON: '/usr/bin/python3' });
    try {
      await p.waitForLog((l) => /database not reachable/.test(String(l.msg)), 60_000, 'retry log');
      const server = await startPg({ settings: { port } });
      try {
        await p.waitForLog((l) => l.msg === 'master: lease acquired', 90_000, 'lease after db start');
      } finally {
        await p.kill('SIGKILL');
        await server.stop();
      }
    } finally {
      await p.kill('SIGKILL');
    }
  });
});

describe('live configuration', () => {
  let f: Fixture;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE live (id serial PRIMARY KEY, v text);
      CREATE TABLE live_sink (id serial PRIMARY KEY, v text);
      CREATE TRIGGER live_event AFTER INSERT ON live FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await waitForMaster(await f.startNode({ name: 'live' }));
  });
  after(async () => f?.close());

  test('a function inserted, changed and deleted while the node runs takes effect without restart', async () => {
    const [fn] = await f.query<{ id: number }>(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang) VALUES ($1, 'na', 'live', 'js') RETURNING id`,
      [
        `export default async (e, ctx) => { await ctx.db.query("INSERT INTO live_sink (v) VALUES ('v1:' || $1)", [e.new.v]); };`,
      ],
    );
    // Committed right after the function: the event must still see it.
    await f.db.query(`INSERT INTO live (v) VALUES ('a')`);
    await waitForRows(f, `SELECT 1 FROM live_sink WHERE v = 'v1:a'`, 1);
    await f.db.query(`UPDATE rppd_function SET code = $1 WHERE id = $2`, [
      `export default async (e, ctx) => { await ctx.db.query("INSERT INTO live_sink (v) VALUES ('v2:' || $1)", [e.new.v]); };`,
      fn!.id,
    ]);
    await f.db.query(`INSERT INTO live (v) VALUES ('b')`);
    await waitForRows(f, `SELECT 1 FROM live_sink WHERE v = 'v2:b'`, 1);
    await f.db.query('DELETE FROM rppd_function WHERE id = $1', [fn!.id]);
    await f.db.query(`INSERT INTO live (v) VALUES ('c')`);
    // The event of 'c' is recorded (the writer does not look up functions) and dropped by the
    // node, which knows the function is gone: nothing runs for it.
    await waitFor(async () => (await f.query(`SELECT 1 FROM rppd_event_queue`)).length === 0, { what: 'queue empty' });
    assert.equal((await f.query(`SELECT 1 FROM live_sink WHERE v LIKE '%:c'`)).length, 0);
  });

  test('rppd_config.max_db_connections is applied live and rppd_info reports the node', async () => {
    await f.db.query(`UPDATE rppd_config SET max_db_connections = 3 WHERE host_name = 'live'`);
    const info = await waitForRows<{ info: string }>(
      f,
      `SELECT rppd_info() AS info WHERE (rppd_info()::jsonb ->> 'pool')::int + (rppd_info()::jsonb ->> 'in_proc')::int = 3`,
      1,
    );
    const parsed = JSON.parse(info[0]!.info);
    assert.equal(parsed.is_master, true);
    assert.equal(parsed.host_name, 'live');
    assert.ok(parsed.heartbeat_age_ms < 10_000);
  });
});

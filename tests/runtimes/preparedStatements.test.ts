// ctx.db.query and the master's queryPrepared prepare a text a connection keeps running
// (src/db/preparedStatements.ts), on a real server: prepared after the threshold, bounded, and
// still right after the server forgot the statement or the table changed under it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { makeStatementRunner, queryPrepared } from '../../src/db/preparedStatements.ts';
import { type Fixture, setupFixture } from '../support/fixture.ts';

describe("prepared statements of ctx.db.query and the master's queries", () => {
  let f: Fixture;
  let client: pg.Client;
  const prepared = async () =>
    (await client.query<{ statement: string }>('SELECT statement FROM pg_prepared_statements ORDER BY name')).rows.map(
      (r) => r.statement,
    );

  before(async () => {
    f = await setupFixture({ install: false });
    await f.db.query(`CREATE TABLE ps (id int PRIMARY KEY, v text); INSERT INTO ps VALUES (1, 'a'), (2, 'b')`);
  });
  after(async () => f?.close());

  async function freshClient(): Promise<pg.Client> {
    await client?.end();
    client = new pg.Client({ connectionString: f.url });
    await client.connect();
    return client;
  }

  test('a text run as often as the threshold is prepared once; one-offs are not', async () => {
    const run = makeStatementRunner({ threshold: 3 });
    const c = await freshClient();
    const text = 'SELECT v FROM ps WHERE id = $1';
    for (let i = 0; i < 6; i++) {
      const { rows } = await run(c, text, [1 + (i % 2)]);
      assert.equal(rows[0]!.v, i % 2 ? 'b' : 'a');
      assert.deepEqual(await prepared(), i < 2 ? [] : [text], `after run ${i + 1}`);
    }
    await run(c, 'SELECT 1 AS one');
    assert.deepEqual(await prepared(), [text]);
  });

  test('threshold 0 never prepares', async () => {
    const run = makeStatementRunner({ threshold: 0 });
    const c = await freshClient();
    for (let i = 0; i < 10; i++) await run(c, 'SELECT 1 AS one');
    assert.deepEqual(await prepared(), []);
  });

  test('at most maxPrepared statements per connection; the rest still run', async () => {
    const run = makeStatementRunner({ threshold: 1, maxPrepared: 2 });
    const c = await freshClient();
    for (const n of [1, 2, 3, 1, 2, 3]) assert.equal((await run(c, `SELECT ${n} AS n`)).rows[0]!.n, n);
    assert.deepEqual(await prepared(), ['SELECT 1 AS n', 'SELECT 2 AS n']);
  });

  test('after a changed table or DISCARD ALL, the query runs again (retried once) with the new shape', async () => {
    const run = makeStatementRunner({ threshold: 1 });
    const c = await freshClient();
    const text = 'SELECT * FROM ps WHERE id = $1';
    assert.deepEqual((await run(c, text, [1])).rows, [{ id: 1, v: 'a' }]);
    await f.db.query('ALTER TABLE ps ADD COLUMN w int'); // 0A000 on the prepared statement
    assert.deepEqual((await run(c, text, [1])).rows, [{ id: 1, v: 'a', w: null }]);
    assert.deepEqual((await run(c, text, [1])).rows, [{ id: 1, v: 'a', w: null }]);
    await c.query('DISCARD ALL'); // 26000 on the next run
    assert.deepEqual(await prepared(), []);
    assert.deepEqual((await run(c, text, [1])).rows, [{ id: 1, v: 'a', w: null }]);
    assert.deepEqual((await run(c, text, [1])).rows, [{ id: 1, v: 'a', w: null }]);
    assert.deepEqual(await prepared(), [text], 'prepared again under a new name');
  });

  test('inside a transaction the error reaches the function; the next run prepares anew', async () => {
    const run = makeStatementRunner({ threshold: 1 });
    const c = await freshClient();
    const text = 'SELECT * FROM ps WHERE id = $1';
    await run(c, text, [2]);
    await c.query('BEGIN');
    await c.query('ALTER TABLE ps DROP COLUMN w');
    await assert.rejects(run(c, text, [2]), (err: Error & { code?: string }) => {
      assert.equal(err.code, '0A000');
      return true;
    });
    await c.query('ROLLBACK');
    await f.db.query('ALTER TABLE ps DROP COLUMN w');
    assert.deepEqual((await run(c, text, [2])).rows, [{ id: 2, v: 'b' }]);
  });

  test('bad SQL fails as it would unprepared, and does not poison the text', async () => {
    const run = makeStatementRunner({ threshold: 1 });
    const c = await freshClient();
    await assert.rejects(run(c, 'SELECT nope FROM ps'), /column "nope" does not exist/);
    await assert.rejects(run(c, 'SELECT nope FROM ps'), /column "nope" does not exist/);
    assert.equal((await run(c, 'SELECT count(*)::int AS n FROM ps')).rows[0]!.n, 2);
    await c.end();
  });

  test("the master's queryPrepared: on a pool, prepared from the second run; a failed statement's client leaves the pool", async () => {
    const pool = new pg.Pool({ connectionString: f.url, max: 1 });
    try {
      const text = 'SELECT v FROM ps WHERE id = $1';
      const onPool = async () =>
        (await queryPrepared<{ statement: string }>(pool, 'SELECT statement FROM pg_prepared_statements')).rows.map(
          (r) => r.statement,
        );
      const pid = async () => (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const first = await pid();
      assert.equal((await queryPrepared<{ v: string }>(pool, text, [1])).rows[0]!.v, 'a');
      assert.ok(!(await onPool()).includes(text), 'not prepared after one run');
      assert.equal((await queryPrepared<{ v: string }>(pool, text, [2])).rows[0]!.v, 'b');
      assert.ok((await onPool()).includes(text), 'prepared on the pool connection after the second run');
      assert.equal(await pid(), first, 'the same connection throughout');
      await assert.rejects(queryPrepared(pool, 'SELECT nope FROM ps'), /column "nope" does not exist/);
      assert.equal(pool.totalCount, 0, 'the failed statement released its client with the error');
      assert.notEqual(await pid(), first, 'a new connection');
      assert.equal((await queryPrepared<{ v: string }>(pool, text, [1])).rows[0]!.v, 'a');
    } finally {
      await pool.end();
    }
  });
});

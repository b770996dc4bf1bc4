// Bad function code never stops the node: every failure is recorded with its
// reason in rppd_function_log, the event is finished, and other events still run.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture, waitForMaster, waitForRows } from '../support/fixture.ts';
import { waitFor } from '../support/waitFor.ts';

const cases: { name: string; lang: string; code: string; error: RegExp; timeout?: number }[] = [
  { name: 'py-throws', lang: 'python', code: 'raise RuntimeError("nope")', error: /^RuntimeError: nope/ },
  { name: 'py-syntax', lang: 'python', code: 'def broken(:\n  pass', error: /SyntaxError/ },
  { name: 'py-loop', lang: 'python', code: 'while True:\n  pass', error: /time|2 ?s|2000/i, timeout: 2 },
  { name: 'py-exit', lang: 'python', code: 'import sys\nsys.exit(4)', error: /exit/i },
  { name: 'py-os-exit', lang: 'python', code: 'import os\nos._exit(9)', error: /exit|9/i },
  { name: 'py-memory', lang: 'python', code: 'x = []\nwhile True:\n  x.append(" " * 10**7)', error: /memory/i },
  {
    name: 'js-throws',
    lang: 'js',
    code: "export default async () => { throw new TypeError('bad js'); }",
    error: /TypeError: bad js/,
  },
  { name: 'js-syntax', lang: 'js', code: 'export default async () => { return (; }', error: /syntax|unexpected/i },
  { name: 'ts-type-only', lang: 'ts', code: 'export const x: number = 1;', error: /default export/i },
  {
    name: 'js-loop',
    lang: 'js',
    code: 'export default async () => { for (;;) {} }',
    error: /time|2 ?s|2000/i,
    timeout: 2,
  },
  { name: 'js-exit', lang: 'js', code: 'export default async () => { process.exit(3); }', error: /exit/i },
];

describe('bad function code', () => {
  let f: Fixture;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE bad (id serial PRIMARY KEY, name text);
      CREATE TABLE good (id serial PRIMARY KEY, v text);
      CREATE TABLE good_sink (id serial PRIMARY KEY, v text);
      CREATE TABLE loud (id serial PRIMARY KEY);
      CREATE TRIGGER bad_event AFTER INSERT ON bad FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      CREATE TRIGGER good_event AFTER INSERT ON good FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      CREATE TRIGGER loud_event AFTER INSERT ON loud FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang) VALUES ($1, 'na', 'public.good', 'python')`,
      [`cur = DB.cursor()\ncur.execute("INSERT INTO good_sink (v) VALUES (%s)", (NEW['v'],))\nDB.commit()`],
    );
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang, fn_logging) VALUES ($1, 'na', 'public.loud', 'python', true)`,
      ['print("x" * (8 * 1024 * 1024))\nprint("done")'],
    );
    await waitForMaster(await f.startNode({ env: { RPPD_MEMORY_LIMIT_MB: '256', RPPD_MAX_ATTEMPTS: '3' } }));
  });
  after(async () => f?.close());

  for (const c of cases) {
    test(`${c.name}: recorded as failed with a clear reason, node keeps going`, async () => {
      const [fn] = await f.query<{ id: number }>(
        `INSERT INTO rppd_function (code, checksum, schema_table, topic, lang, timeout_sec)
         VALUES ($1, 'na', 'public.bad', $2, $3, $4) RETURNING id`,
        [c.code, `${c.name}`, c.lang, c.timeout ?? 60],
      );
      // Only this case's function should fire: move the others away first.
      await f.db.query(
        `UPDATE rppd_function SET schema_table = 'public.parked' WHERE schema_table = 'public.bad' AND id <> $1`,
        [fn!.id],
      );
      await f.db.query('INSERT INTO bad (name) VALUES ($1)', [c.name]);
      const [log] = await waitForRows<{ error_msg: string }>(
        f,
        'SELECT error_msg FROM rppd_function_log WHERE fn_id = $1',
        1,
        [fn!.id],
        120_000,
      );
      assert.match(log!.error_msg, c.error);
      // The node still runs other events.
      await f.db.query('INSERT INTO good (v) VALUES ($1)', [`after ${c.name}`]);
      await waitForRows(f, 'SELECT 1 FROM good_sink WHERE v = $1', 1, [`after ${c.name}`]);
    });
  }

  test('a function printing 8 MB is cut to the output limit and still succeeds', async () => {
    await f.db.query('INSERT INTO loud DEFAULT VALUES');
    const [log] = await waitForRows<{ len: number; error_msg: string | null; tail: string }>(
      f,
      `SELECT length(output) AS len, error_msg, right(output, 200) AS tail FROM rppd_function_log l
         JOIN rppd_function f ON f.id = l.fn_id WHERE f.schema_table = 'public.loud'`,
      1,
    );
    assert.equal(log!.error_msg, null);
    assert.ok(log!.len <= 1024 * 1024 + 200, `output cut (${log!.len})`);
    assert.match(log!.tail, /truncated/);
  });

  test('no event is left behind', async () => {
    await waitFor(async () => (await f.query('SELECT 1 FROM rppd_event_queue')).length === 0, {
      what: 'queue empty',
      timeoutMs: 60_000,
    });
  });
});

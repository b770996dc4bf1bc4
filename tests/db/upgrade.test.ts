// Upgrades: a schema installed with an older rppd and upgraded (by `rppd init` and by
// ALTER EXTENSION UPDATE) is the schema a fresh install creates, and keeps its pending
// events with their state. Also: pg_dump keeps the rows of the extension's tables.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { copyExtensionFiles, latestVersion } from '../../src/db/extensionFiles.ts';
import { installSchema } from '../../src/db/installSchema.ts';
import { describeSchema, functionSources } from '../support/describeSchema.ts';
import { type Fixture, setupFixture, waitForRows } from '../support/fixture.ts';
import { pgShareDir } from '../support/pgServer.ts';

const FIRST = '1.0.0';

/** Pending events of 1.0.0: a plain one, one part done and retried, one made by a schedule. */
async function eventsOf100(client: pg.Client, schema: string): Promise<void> {
  await client.query(`
    CREATE TABLE ${schema}_src (id int PRIMARY KEY, v text);
    CREATE TRIGGER e AFTER INSERT OR UPDATE OR DELETE ON ${schema}_src FOR EACH ROW EXECUTE FUNCTION ${schema}.rppd_event();
    INSERT INTO ${schema}_src VALUES (1, 'one'), (2, 'two');
    UPDATE ${schema}.rppd_event_queue SET done_fns = '{7}', attempts = 2, last_error = 'connection lost'
     WHERE new_row ->> 'id' = '2';
    INSERT INTO ${schema}.rppd_event_queue (schema_table, trig, new_row, fn_id, cron_id)
    VALUES ('public.${schema}_src', 0, '{"ticks": "1"}', 7, 3);`);
}

async function assertEventsKept(client: pg.Client, schema: string): Promise<void> {
  const { rows } = await client.query(
    `SELECT q.trig, q.new_row, s.done_fns, s.attempts, s.last_error, s.fn_id, s.cron_id
       FROM ${schema}.rppd_event_queue q LEFT JOIN ${schema}.rppd_event_state s ON s.event_id = q.id ORDER BY q.id`,
  );
  assert.deepEqual(rows, [
    {
      trig: 1,
      new_row: { id: 1, v: 'one' },
      done_fns: null,
      attempts: null,
      last_error: null,
      fn_id: null,
      cron_id: null,
    },
    {
      trig: 1,
      new_row: { id: 2, v: 'two' },
      done_fns: [7],
      attempts: 2,
      last_error: 'connection lost',
      fn_id: null,
      cron_id: null,
    },
    { trig: 0, new_row: { ticks: '1' }, done_fns: [], attempts: 0, last_error: null, fn_id: 7, cron_id: 3 },
  ]);
  // The trigger writes into the new table, and ids go on from the old ones.
  await client.query(`INSERT INTO ${schema}_src VALUES (3, 'three')`);
  const last = await client.query(`SELECT id, new_row FROM ${schema}.rppd_event_queue ORDER BY id DESC LIMIT 1`);
  assert.deepEqual(last.rows[0].new_row, { id: 3, v: 'three' });
  const ids = await client.query(`SELECT array_agg(id ORDER BY id) AS ids FROM ${schema}.rppd_event_queue`);
  assert.equal(new Set(ids.rows[0].ids).size, 4);
  assert.equal(ids.rows[0].ids.at(-1), last.rows[0].id);
}

describe('upgrades', () => {
  let f: Fixture;
  let fresh: string;
  let freshFunctions: Record<string, string>;
  before(async () => {
    f = await setupFixture({ install: false });
    await installSchema(f.db, 'rppd_fresh', { mode: 'sql' });
    fresh = (await describeSchema(f.db, 'rppd_fresh')).replaceAll('rppd_fresh.', '@extschema@.');
    freshFunctions = await functionSources(f.db, 'rppd_fresh');
  });
  after(async () => f?.close());

  test(`rppd init upgrades a ${FIRST} schema to the fresh ${latestVersion()} one and keeps pending events`, async () => {
    const first = await installSchema(f.db, 'rppd_up_sql', { mode: 'sql', version: FIRST });
    assert.equal(first.to, FIRST);
    await eventsOf100(f.db, 'rppd_up_sql');
    const up = await installSchema(f.db, 'rppd_up_sql', { mode: 'sql' });
    assert.deepEqual([up.from, up.to, up.changed], [FIRST, latestVersion(), true]);
    assert.equal((await describeSchema(f.db, 'rppd_up_sql')).replaceAll('rppd_up_sql.', '@extschema@.'), fresh);
    assert.deepEqual(await functionSources(f.db, 'rppd_up_sql'), freshFunctions);
    await assertEventsKept(f.db, 'rppd_up_sql');
  });

  test(`ALTER EXTENSION rppd UPDATE from ${FIRST} gives the same schema`, async () => {
    copyExtensionFiles(pgShareDir(f.server.binDir));
    const first = await installSchema(f.db, 'rppd_up_ext', { mode: 'extension', version: FIRST });
    assert.deepEqual([first.mode, first.to], ['extension', FIRST]);
    await eventsOf100(f.db, 'rppd_up_ext');
    const up = await installSchema(f.db, 'rppd_up_ext');
    assert.deepEqual([up.mode, up.from, up.to], ['extension', FIRST, latestVersion()]);
    assert.equal((await describeSchema(f.db, 'rppd_up_ext')).replaceAll('rppd_up_ext.', '@extschema@.'), fresh);
    assert.deepEqual(await functionSources(f.db, 'rppd_up_ext'), freshFunctions);
    await assertEventsKept(f.db, 'rppd_up_ext');
    // Every table and sequence of the extension is marked for pg_dump.
    const { rows } = await f.db.query(
      `SELECT array_agg(c.relname::text ORDER BY c.relname) AS marked
         FROM pg_extension e, unnest(e.extconfig) AS t(oid) JOIN pg_class c ON c.oid = t.oid WHERE e.extname = 'rppd'`,
    );
    assert.deepEqual(rows[0].marked, [
      'rppd_config',
      'rppd_config_id_seq',
      'rppd_cron',
      'rppd_cron_id_seq',
      'rppd_epoch_seq',
      'rppd_event_queue',
      'rppd_event_queue_id_seq',
      'rppd_event_state',
      'rppd_function',
      'rppd_function_id_seq',
      'rppd_function_log',
      'rppd_function_log_id_seq',
    ]);
  });

  test('pg_dump of a database with the extension keeps functions and pending events', async () => {
    await f.db.query(
      `INSERT INTO rppd_up_ext.rppd_function (code, checksum, schema_table) VALUES ('print("kept in the dump")', '', 'public.t')`,
    );
    const dump = execFileSync(join(f.server.binDir, 'pg_dump'), ['--data-only', '--schema=rppd_up_ext', f.url], {
      encoding: 'utf8',
    });
    assert.match(dump, /kept in the dump/);
    assert.match(dump, /"id": ?3, ?"v": ?"three"|"three"/);
    assert.match(dump, /connection lost/);
  });

  test(`rppd start against a ${FIRST} schema upgrades it and runs the events that waited`, async () => {
    await installSchema(f.db, 'public', { mode: 'sql', version: FIRST });
    await f.db.query(`
      CREATE TABLE old_src (id int PRIMARY KEY, v text);
      CREATE TABLE old_sink (id int PRIMARY KEY, v text);
      CREATE TRIGGER e AFTER INSERT ON old_src FOR EACH ROW EXECUTE FUNCTION rppd_event();
      INSERT INTO old_src VALUES (1, 'a'), (2, 'b');`);
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang) VALUES ($1, '', 'public.old_src', 'js')`,
      [
        "export default async (e, ctx) => { await ctx.db.query('INSERT INTO old_sink VALUES ($1, $2)', [e.new.id, e.new.v]); };",
      ],
    );
    const node = await f.startNode();
    await node.waitForLog((l) => l.msg === 'upgraded rppd', 30_000, 'the upgrade');
    const rows = await waitForRows<{ id: number; v: string }>(f, 'SELECT id, v FROM old_sink ORDER BY id', 2);
    assert.deepEqual(rows, [
      { id: 1, v: 'a' },
      { id: 2, v: 'b' },
    ]);
    const [v] = await f.query<{ v: string }>('SELECT rppd_schema_version() AS v');
    assert.equal(v!.v, latestVersion());
  });
});

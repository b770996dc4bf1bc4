// The extension: CREATE EXTENSION from the copied files and `rppd init` with the
// same SQL; idempotent; a newer schema is refused; the trigger is transactional.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { copyExtensionFiles, latestVersion } from '../../src/db/extensionFiles.ts';
import { installSchema, SchemaTooNewError } from '../../src/db/installSchema.ts';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import { type PgServer, pgShareDir } from '../support/pgServer.ts';
import { rppdBin } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';

const tables = [
  'rppd_config',
  'rppd_cron',
  'rppd_event_queue',
  'rppd_event_state',
  'rppd_function',
  'rppd_function_log',
  'rppd_wake',
  'rppd_wal_position',
];

async function tablesIn(client: pg.Client, schema: string): Promise<string[]> {
  const { rows } = await client.query<{ t: string }>(
    `SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`,
    [schema],
  );
  return rows.map((r) => r.t);
}

describe('extension install', () => {
  let f: Fixture;
  let server: PgServer;
  let client: pg.Client;
  before(async () => {
    f = await setupFixture({ install: false });
    server = f.server;
    client = f.db;
  });
  after(async () => f?.close());

  test('rppd extension install + CREATE EXTENSION rppd SCHEMA s', async () => {
    copyExtensionFiles(pgShareDir(server.binDir));
    await client.query('CREATE SCHEMA ext');
    await client.query('CREATE EXTENSION rppd SCHEMA ext');
    assert.deepEqual(await tablesIn(client, 'ext'), tables);
    const { rows } = await client.query(`SELECT extversion FROM pg_extension WHERE extname = 'rppd'`);
    assert.equal(rows[0].extversion, latestVersion());
    // rppd init on that schema sees the extension and changes nothing.
    const again = await installSchema(client, 'ext');
    assert.deepEqual([again.mode, again.changed], ['extension', false]);
  });

  test('rppd init (plain SQL) into a new schema is idempotent, via the CLI', async () => {
    const out1 = execFileSync(process.execPath, [rppdBin, 'init', 'plain', server.url, '--sql'], { encoding: 'utf8' });
    assert.match(out1, /installed rppd .* in schema "plain"/);
    const out2 = execFileSync(process.execPath, [rppdBin, 'init', server.url, 'plain.', '--sql'], { encoding: 'utf8' });
    assert.match(out2, /already installed/);
    assert.deepEqual(await tablesIn(client, 'plain'), tables);
  });

  test('a schema with a newer rppd is refused with a clear message', async () => {
    await installSchema(client, 'future', { mode: 'sql' });
    await client.query(
      `CREATE OR REPLACE FUNCTION future.rppd_schema_version() RETURNS text LANGUAGE sql AS $$ SELECT '99.0.0' $$`,
    );
    await assert.rejects(installSchema(client, 'future'), (err: Error) => {
      assert.ok(err instanceof SchemaTooNewError);
      assert.match(err.message, /99\.0\.0.*newer/);
      return true;
    });
  });

  test('the trigger records in the writer transaction; schema names needing quotes work', async () => {
    await installSchema(client, 'My Schema', { mode: 'sql' });
    await client.query(`
      CREATE TABLE public.q (id int PRIMARY KEY, v text);
      CREATE TRIGGER q_event AFTER INSERT OR UPDATE OR DELETE ON public.q FOR EACH ROW EXECUTE FUNCTION "My Schema".rppd_event();
      INSERT INTO "My Schema".rppd_function (code, checksum, schema_table) VALUES ('pass', 'na', 'q');`);
    const fn = await client.query(`SELECT schema_table FROM "My Schema".rppd_function`);
    assert.equal(fn.rows[0].schema_table, 'public.q', 'a bare table name means public');
    const listener = new pg.Client(server.url);
    await listener.connect();
    const notes: string[] = [];
    listener.on('notification', (n) => notes.push(n.payload ?? ''));
    await listener.query('LISTEN rppd_event');
    // As a master waiting for NOTIFY (writers send none otherwise: the next test).
    await listener.query(`SELECT "My Schema".rppd_listen_lock(true)`);
    await client.query('BEGIN');
    await client.query(`INSERT INTO public.q VALUES (1, 'a'), (2, 'b')`);
    await client.query('ROLLBACK');
    await client.query(`INSERT INTO public.q VALUES (3, 'c'), (4, 'd')`);
    const { rows } = await client.query(
      `SELECT trig, new_row FROM "My Schema".rppd_event_queue WHERE schema_table = 'public.q' ORDER BY id`,
    );
    assert.deepEqual(
      rows.map((r) => r.new_row.id),
      [3, 4],
    );
    // One NOTIFY for the two-row transaction, carrying the schema.
    await listener.query('SELECT 1');
    assert.deepEqual(notes, ['"My Schema"']);
    await listener.end();
  });

  test('writers NOTIFY only while a master holds the listen lock, and keep it from being taken while they do not', async () => {
    const holder = new pg.Client(server.url);
    const listener = new pg.Client(server.url);
    await holder.connect();
    await listener.connect();
    const notes: string[] = [];
    listener.on('notification', (n) => notes.push(n.payload ?? ''));
    await listener.query('LISTEN rppd_event');
    const lock = async (hold: boolean) =>
      (await holder.query<{ ok: boolean }>(`SELECT "My Schema".rppd_listen_lock($1) AS ok`, [hold])).rows[0]!.ok;
    const writersNotify = async () =>
      (await client.query<{ n: boolean }>(`SELECT "My Schema".rppd_writers_notify() AS n`)).rows[0]!.n;
    const arrived = (payload: string) =>
      waitFor(async () => (notes.includes(payload) ? true : undefined), { what: `NOTIFY ${payload}` });
    // Notifications arrive in commit order: a marker sent after an insert shows what the insert sent.
    const marker = async (name: string) => {
      await holder.query(`SELECT pg_notify('rppd_event', $1)`, [name]);
      await arrived(name);
    };
    try {
      // No master listens: the writer records the event and sends nothing.
      assert.equal(await writersNotify(), false);
      await client.query(`INSERT INTO public.q VALUES (5, 'e')`);
      await marker('m1');
      assert.deepEqual(notes, ['m1']);

      assert.equal(await lock(true), true);
      assert.equal(await writersNotify(), true);
      await client.query(`INSERT INTO public.q VALUES (6, 'f')`);
      await marker('m2');
      assert.deepEqual(notes, ['m1', '"My Schema"', 'm2']);
      assert.equal(await lock(false), true);
      assert.equal(await writersNotify(), false);

      // A writer's open transaction that sends no NOTIFY shares the lock: no master can start
      // waiting for NOTIFY before it commits (and so before its event can be read).
      await client.query('BEGIN');
      await client.query(`INSERT INTO public.q VALUES (7, 'g')`);
      assert.equal(await lock(true), false);
      await client.query('COMMIT');
      assert.equal(await lock(true), true);
      await marker('m3');
      assert.deepEqual(notes, ['m1', '"My Schema"', 'm2', 'm3']);
    } finally {
      await holder.end();
      await listener.end();
    }
    // The lock goes with the master's session.
    assert.equal(await writersNotify(), false);
  });

  test('a writer with rights on its own table only records every kind of event', async () => {
    const role = `rppd_writer_${process.pid}`;
    await client.query(`
      CREATE ROLE ${role};
      CREATE TABLE public.w (id int PRIMARY KEY);
      GRANT INSERT, UPDATE, DELETE, TRUNCATE ON public.w TO ${role};
      CREATE TRIGGER w_event AFTER INSERT OR UPDATE OR DELETE ON public.w FOR EACH ROW EXECUTE FUNCTION "My Schema".rppd_event();
      CREATE TRIGGER w_truncate AFTER TRUNCATE ON public.w FOR EACH STATEMENT EXECUTE FUNCTION "My Schema".rppd_event();`);
    try {
      await client.query(`SET ROLE ${role}`);
      await client.query('INSERT INTO public.w VALUES (1)');
      await client.query('UPDATE public.w SET id = 2');
      await client.query('DELETE FROM public.w');
      await client.query('TRUNCATE public.w');
    } finally {
      await client.query('RESET ROLE');
      await client.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`);
    }
    const { rows } = await client.query(
      `SELECT trig FROM "My Schema".rppd_event_queue WHERE schema_table = 'public.w' ORDER BY id`,
    );
    assert.deepEqual(
      rows.map((r) => r.trig),
      [1, 0, 2, 3],
    );
  });
});

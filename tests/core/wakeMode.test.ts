// How a node learns of new events, on a real node: writers NOTIFY while events arrive
// slowly (rppd_writers_notify(): the master holds rppd_listen_lock); a burst makes the master
// poll and let it go, and writers stop notifying; once the burst is done, writers NOTIFY again.
// With no master, writers send none. Nothing is lost on the way.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type Fixture, setupFixture, waitForMaster, waitForRows } from '../support/fixture.ts';
import type { RppdProcess } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';

const sinkCode = `export default async (event, ctx) => {
  await ctx.db.query('INSERT INTO wake_sink (src_id) VALUES ($1)', [event.new.id]);
};`;

describe('wake mode', () => {
  let f: Fixture;
  let node: RppdProcess;
  const sleeping = async () =>
    (await f.query<{ notify: boolean }>('SELECT rppd_writers_notify() AS notify'))[0]!.notify;

  // The next switch to polling from now on (earlier tests logged theirs).
  const nextPollMode = (timeoutMs: number) => {
    const from = node.lines.length;
    return waitFor(() => node.lines.slice(from).find((l) => l.msg === 'dispatch wake mode' && l.mode === 'poll'), {
      timeoutMs,
      what: 'poll mode',
    });
  };

  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE wake_src (id serial PRIMARY KEY);
      CREATE TABLE wake_sink (id serial PRIMARY KEY, src_id int UNIQUE);
      CREATE TRIGGER wake_src_event AFTER INSERT ON wake_src FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang) VALUES ($1, 'na', 'public.wake_src', 'js')`,
      [sinkCode],
    );
    node = await f.startNode({ env: { RPPD_LOG_LEVEL: 'debug' } });
    await waitForMaster(node);
  });
  after(async () => f?.close());

  test('an idle node has writers NOTIFY, and a single event runs', async () => {
    await waitFor(async () => ((await sleeping()) ? true : undefined), { what: 'writers notify' });
    await f.db.query('INSERT INTO wake_src DEFAULT VALUES');
    await waitForRows(f, 'SELECT 1 FROM wake_sink', 1);
    assert.equal(await sleeping(), true, 'one event does not make the master poll');
  });

  test('a burst switches writers off NOTIFY, and back on once it is done; every event runs once', async () => {
    const polling = nextPollMode(60_000);
    await f.db.query('INSERT INTO wake_src SELECT FROM generate_series(1, 3000)');
    await polling;
    // The master polls and has let rppd_listen_lock go: writers stop notifying (it polls until
    // the 3,000 events are read, which leaves time to see it).
    await waitFor(async () => ((await sleeping()) ? undefined : true), { what: 'writers stop notifying' });
    await waitForRows(f, 'SELECT 1 FROM wake_sink', 3001, [], 120_000);
    await waitFor(async () => ((await sleeping()) ? true : undefined), { what: 'writers notify again' });
    const [counts] = await f.query<{ n: number; distinct: number }>(
      'SELECT count(*)::int AS n, count(DISTINCT src_id)::int AS distinct FROM wake_sink',
    );
    assert.deepEqual(counts, { n: 3001, distinct: 3001 });
    // Finished events leave the queue when the completer's next batch commits, after their sink rows.
    await waitFor(
      async () =>
        (await f.query<{ n: number }>('SELECT count(*)::int AS n FROM rppd_event_queue'))[0]!.n === 0
          ? true
          : undefined,
      { what: 'the queue empty' },
    );
  });

  test('writers that queue for the NOTIFY lock make the master poll; nothing is lost', async () => {
    await waitFor(async () => ((await sleeping()) ? true : undefined), { what: 'writers notify' });
    const before = (await f.query<{ n: number }>('SELECT count(*)::int AS n FROM wake_sink'))[0]!.n;
    const polling = nextPollMode(120_000);
    // Eight writers, one row per transaction, as fast as they can: each commit NOTIFYs while
    // the master is in notify mode, so they queue for PostgreSQL's NOTIFY lock.
    let writing = true;
    let written = 0;
    const writers = Array.from({ length: 8 }, async () => {
      const c = new pg.Client({ connectionString: f.url });
      await c.connect();
      try {
        while (writing) {
          await c.query('INSERT INTO wake_src DEFAULT VALUES');
          written++;
        }
      } finally {
        await c.end();
      }
    });
    try {
      await polling;
    } finally {
      writing = false;
      await Promise.all(writers);
    }
    await waitForRows(f, 'SELECT 1 FROM wake_sink', before + written, [], 120_000);
    const [counts] = await f.query<{ n: number; distinct: number }>(
      'SELECT count(*)::int AS n, count(DISTINCT src_id)::int AS distinct FROM wake_sink',
    );
    assert.deepEqual(counts, { n: before + written, distinct: before + written });
  });
  test('the listen lock connection killed: writers stop notifying, the master polls and takes it again; nothing is lost', async () => {
    await waitFor(async () => ((await sleeping()) ? true : undefined), { what: 'writers notify' });
    const before = (await f.query<{ n: number }>('SELECT count(*)::int AS n FROM wake_sink'))[0]!.n;
    const holder = async () =>
      (
        await f.query<{ pid: number }>(
          `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 1919971438 AND mode = 'ExclusiveLock' AND granted`,
        )
      )[0]?.pid;
    const first = await waitFor(holder, { what: 'the master holding the listen lock' });
    await f.query('SELECT pg_terminate_backend($1)', [first]);
    // Events written while nobody holds it send no NOTIFY: the master finds them by polling.
    for (let i = 0; i < 20; i++) await f.db.query('INSERT INTO wake_src DEFAULT VALUES');
    await waitFor(
      async () => {
        const pid = await holder();
        return pid !== undefined && pid !== first ? pid : undefined;
      },
      { what: 'the listen lock taken again on a new connection' },
    );
    await node.waitForLog((l) => typeof l.where === 'string' && l.where.startsWith('listen lock connection'), 30_000);
    await f.db.query('INSERT INTO wake_src SELECT FROM generate_series(1, 20)');
    await waitForRows(f, 'SELECT 1 FROM wake_sink', before + 40, [], 60_000);
    const [counts] = await f.query<{ n: number; distinct: number }>(
      'SELECT count(*)::int AS n, count(DISTINCT src_id)::int AS distinct FROM wake_sink',
    );
    assert.deepEqual(counts, { n: before + 40, distinct: before + 40 });
  });

  test('with the node killed writers send no NOTIFY, and the events wait for the next master', async () => {
    const before = (await f.query<{ n: number }>('SELECT count(*)::int AS n FROM wake_sink'))[0]!.n;
    await node.kill('SIGKILL');
    // Its sessions end once their backends see the connections closed.
    await waitFor(async () => ((await sleeping()) ? undefined : true), { what: 'writers stop notifying' });
    const listener = new pg.Client(f.url);
    await listener.connect();
    const notes: string[] = [];
    listener.on('notification', (n) => notes.push(n.payload ?? ''));
    try {
      await listener.query('LISTEN rppd_event');
      await f.db.query('INSERT INTO wake_src SELECT FROM generate_series(1, 5)');
      // Notifications arrive in commit order: the marker after the inserts shows they sent none.
      await f.db.query(`SELECT pg_notify('rppd_event', 'marker')`);
      await waitFor(async () => (notes.includes('marker') ? true : undefined), { what: 'the marker' });
      assert.deepEqual(notes, ['marker']);
    } finally {
      await listener.end();
    }
    node = await f.startNode({ env: { RPPD_LOG_LEVEL: 'debug' } });
    await waitForMaster(node);
    await waitForRows(f, 'SELECT 1 FROM wake_sink', before + 5, [], 60_000);
    await waitFor(async () => ((await sleeping()) ? true : undefined), { what: 'writers notify again' });
  });
});

// An event whose writer took its id early and committed late (a long transaction) runs even
// after the master's reads have passed its id, the gap watch on it has expired and later events
// have run: the sweep finds it. The sweep's floor (dispatch/sweepFloor.ts) stays below such an
// id while its transaction is open, and passes it once the transaction has ended.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type Fixture, setupFixture, waitForMaster, waitForRows } from '../support/fixture.ts';
import { freePort } from '../support/pgServer.ts';
import { waitFor } from '../support/waitFor.ts';

interface Info {
  sweep: { runs: number; floor: string; floor_wait_s: number } | null;
}

describe('late commits', () => {
  let f: Fixture;
  let base: string;
  const info = async () => (await (await fetch(`${base}/info`)).json()) as Info;
  const lastId = async () =>
    BigInt((await f.query<{ n: string }>(`SELECT last_value::text AS n FROM rppd_event_queue_id_seq`))[0]!.n);
  const sweptEvents = async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    return Number(/^rppd_events_admitted_total\{via="sweep"\} (\d+)$/m.exec(text)?.[1] ?? 0);
  };

  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE late_src (id serial PRIMARY KEY, v text);
      CREATE TABLE late_seen (id serial PRIMARY KEY, v text);
      CREATE TRIGGER late_event AFTER INSERT ON late_src FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      INSERT INTO rppd_function (code, checksum, schema_table, lang) VALUES
        ('export default async (event, ctx) => { await ctx.db.query(''INSERT INTO late_seen (v) VALUES ($1)'', [event.new.v]); }',
         'na', 'public.late_src', 'js');`);
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await waitForMaster(await f.startNode({ env: { RPPD_HTTP: `127.0.0.1:${port}` } }));
  });
  after(async () => f?.close());

  test('the floor follows finished events, holds below an open writer, and its event still runs', async () => {
    // Events that ran: the floor moves past them (two sweeps after their writers ended).
    for (const v of ['a', 'b', 'c']) await f.db.query('INSERT INTO late_src (v) VALUES ($1)', [v]);
    await waitForRows(f, 'SELECT v FROM late_seen', 3);
    const first = await lastId();
    await waitFor(async () => BigInt((await info()).sweep?.floor ?? 0) >= first, {
      what: `the sweep floor to reach ${first}`,
      timeoutMs: 60_000,
    });

    // A writer takes its event id and stays open while later events commit and run.
    const writer = new pg.Client({ connectionString: f.url });
    await writer.connect();
    try {
      await writer.query('BEGIN');
      await writer.query(`INSERT INTO late_src (v) VALUES ('late')`);
      const lateId = BigInt(
        (await writer.query<{ id: string }>(`SELECT currval('rppd_event_queue_id_seq')::text AS id`)).rows[0]!.id,
      );
      for (const v of ['d', 'e', 'f']) await f.db.query('INSERT INTO late_src (v) VALUES ($1)', [v]);
      await waitForRows(f, 'SELECT v FROM late_seen', 6);
      // Long enough for the gap watch on lateId (2 s) to expire: five more sweeps, one a second.
      const runs = (await info()).sweep!.runs;
      await waitFor(async () => (await info()).sweep!.runs >= runs + 5, { what: 'five sweeps', timeoutMs: 60_000 });
      const sweep = (await info()).sweep!;
      const held = BigInt(sweep.floor);
      assert.ok(held < lateId, `floor ${held} must stay below the open writer's event ${lateId}`);
      // Sweeps start at least a second apart, and the mark that holds was set by the first of these five
      // or earlier: four intervals, less what that sweep's own query took.
      assert.ok(sweep.floor_wait_s >= 3, `the floor has waited ${sweep.floor_wait_s} s`);

      const before = await sweptEvents();
      await writer.query('COMMIT');
      const seen = await waitForRows<{ v: string }>(f, `SELECT v FROM late_seen WHERE v = 'late'`, 1);
      assert.equal(seen.length, 1);
      assert.ok((await sweptEvents()) > before, 'the late event came in through the sweep');
    } finally {
      await writer.end();
    }

    // The writer has ended: the floor passes its event and the ones after it.
    const end = await lastId();
    await waitFor(async () => BigInt((await info()).sweep?.floor ?? 0) >= end, {
      what: `the sweep floor to reach ${end}`,
      timeoutMs: 60_000,
    });
    const all = await f.query<{ v: string }>('SELECT v FROM late_seen ORDER BY v');
    assert.deepEqual(
      all.map((r) => r.v),
      ['a', 'b', 'c', 'd', 'e', 'f', 'late'],
    );
  });
});

// The completer against a real database: batches of deletions (one statement carrying the
// lease fence), how a burst is split into batches, and what a stale master may not write.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import pg from 'pg';
import { deleteOrphanStates, readEventsByIds } from '../../src/db/queries/events.ts';
import { Fenced, makeCompleter } from '../../src/dispatch/completer.ts';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import { waitFor } from '../support/waitFor.ts';

describe('completer', () => {
  let f: Fixture;
  let pool: pg.Pool;
  let nodeId: number;
  before(async () => {
    f = await setupFixture();
    pool = new pg.Pool({ connectionString: f.url, max: 2 });
    const [node] = await f.query<{ id: number }>(
      `INSERT INTO rppd_config (host, host_name, master, epoch, lease_until)
       VALUES ('127.0.0.1:1', 'completer', true, 7, now() + interval '10 minutes') RETURNING id`,
    );
    nodeId = node!.id;
  });
  after(async () => {
    await pool?.end();
    await f?.close();
  });
  beforeEach(async () => {
    await f.db.query('DELETE FROM rppd_event_queue');
    await f.db.query('DELETE FROM rppd_event_state');
    await f.db.query(`UPDATE rppd_config SET lease_until = now() + interval '10 minutes' WHERE id = $1`, [nodeId]);
  });

  async function queueEvents(n: number): Promise<string[]> {
    const rows = await f.query<{ id: string }>(
      `INSERT INTO rppd_event_queue (schema_table, trig) SELECT 'public.t', 1 FROM generate_series(1, $1) RETURNING id`,
      [n],
    );
    return rows.map((r) => r.id);
  }

  function completer(epoch: string) {
    const flushed: string[][] = [];
    const errors: Error[] = [];
    const c = makeCompleter({
      pool,
      schema: 'public',
      fence: { nodeId, epoch },
      onError: (err) => errors.push(err),
      onFlushed: (ids) => flushed.push(ids),
    });
    return { c, flushed, errors };
  }

  const left = async () => (await f.query(`SELECT id FROM rppd_event_queue WHERE schema_table = 'public.t'`)).length;

  test('a burst of 300 finished events is written as a full batch and the rest', async () => {
    const ids = await queueEvents(300);
    const { c, flushed, errors } = completer('7');
    for (const id of ids) c.eventDone(id);
    assert.equal(c.pendingCount(), 300);
    await c.flush();
    assert.deepEqual(errors, []);
    assert.deepEqual(
      flushed.map((b) => b.length),
      [256, 44],
    );
    assert.equal(c.pendingCount(), 0);
    assert.equal(await left(), 0);
  });

  test('a few events wait for the hold and are written without flush()', async () => {
    const ids = await queueEvents(3);
    const { c, flushed } = completer('7');
    for (const id of ids) c.eventDone(id);
    await waitFor(async () => flushed.length > 0, { what: 'the held batch written' });
    assert.deepEqual(flushed, [ids]);
    assert.equal(await left(), 0);
  });

  test('a stale epoch deletes nothing, with or without log rows, and reports Fenced', async () => {
    const ids = await queueEvents(4);
    const { c, flushed, errors } = completer('6');
    c.eventDone(ids[0]!);
    c.eventDone(ids[1]!);
    await c.flush(); // deletions alone: the single fenced statement
    c.log({
      node_id: nodeId,
      fn_id: 1,
      trig_value: null,
      trig_type: 1,
      started_at: new Date().toISOString(),
      took_ms: 1,
      output: '',
      error_msg: 'x',
      event_id: ids[2]!,
    });
    c.eventDone(ids[2]!);
    await c.flush(); // with a log row: the fenced transaction
    assert.deepEqual(flushed, []);
    assert.equal(errors.length, 2);
    for (const err of errors) assert.ok(err instanceof Fenced, String(err));
    assert.equal(c.pendingCount(), 0, 'dropped: the next master runs them again');
    assert.equal(await left(), 4);
    assert.equal((await f.query('SELECT 1 FROM rppd_function_log')).length, 0);
  });

  test('an expired lease deletes nothing', async () => {
    const ids = await queueEvents(2);
    await f.db.query(`UPDATE rppd_config SET lease_until = now() - interval '1 second' WHERE id = $1`, [nodeId]);
    const { c, flushed, errors } = completer('7');
    for (const id of ids) c.eventDone(id);
    await c.flush();
    assert.deepEqual(flushed, []);
    assert.ok(errors[0] instanceof Fenced);
    assert.equal(await left(), 2);
  });

  test('retries and functions done are recorded in rppd_event_state and leave with their event', async () => {
    const [a, b] = await queueEvents(2);
    const { c, errors } = completer('7');
    c.retried(a!, 1, 'connection lost');
    c.fnDone(a!, 4);
    c.fnDone(b!, 4);
    await c.flush();
    c.retried(a!, 2, 'connection lost again');
    c.fnDone(a!, 5);
    await c.flush();
    const state = () =>
      f.query(`SELECT event_id::text AS id, done_fns, attempts, last_error FROM rppd_event_state ORDER BY event_id`);
    assert.deepEqual(await state(), [
      { id: a, done_fns: [4, 5], attempts: 2, last_error: 'connection lost again' },
      { id: b, done_fns: [4], attempts: 0, last_error: null },
    ]);
    // A later master reads the state with the event.
    const [row] = await readEventsByIds(pool, 'public', [a!]);
    assert.deepEqual([row!.done_fns, row!.attempts], [[4, 5], 2]);
    c.eventDone(a!);
    c.eventDone(b!);
    await c.flush();
    assert.deepEqual(errors, []);
    assert.deepEqual(await state(), []);
    assert.equal(await left(), 0);
  });

  test('state of an event that is gone is neither written nor kept', async () => {
    const [a] = await queueEvents(1);
    await f.db.query('DELETE FROM rppd_event_queue WHERE id = $1', [a]);
    const { c } = completer('7');
    c.retried(a!, 1, 'x');
    await c.flush();
    assert.equal((await f.query('SELECT 1 FROM rppd_event_state')).length, 0);
    await f.db.query(`INSERT INTO rppd_event_state (event_id, attempts) VALUES (-1, 3)`);
    assert.equal(await deleteOrphanStates(pool, 'public'), 1);
  });
});

// RunBatch: the runs the master hands one node in one turn travel in one call and their
// results stream back as each finishes; a run the node has other code for comes back
// not_found on its own; a stale epoch is refused before anything starts; and a node
// SIGKILLed in the middle of a call loses nothing and overlaps nothing.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { RunRequest } from '../../src/rpc/protocol.ts';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import type { LogLine, RppdProcess } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';
import { feedUntil, rawRunBatch, rawStatus, startNodes, waitForMasterRow, waitForReady } from './clusterSupport.ts';

const names = ['b1', 'b2'];

// Reads its source row and writes a sink row. Runs wait at lock 43 while the test holds it.
const SRC_FN = `export default async (e, ctx) => {
  await ctx.db.query('INSERT INTO started (src_id, pid) VALUES ($1, $2)', [e.new.id, process.pid]);
  await ctx.db.query('SELECT pg_advisory_lock_shared(43)');
  await ctx.db.query('SELECT pg_advisory_unlock_shared(43)');
  const { rows } = await ctx.db.query('SELECT v FROM src WHERE id = $1', [e.new.id]);
  await ctx.db.query('INSERT INTO sink (src_id, v, pid) VALUES ($1, $2, $3)', [e.new.id, rows[0].v * 2, process.pid]);
};`;

// Called only by the test, directly on a node: a run with hang waits at lock 44 while the test holds it.
const DIRECT_FN = `export default async (e, ctx) => {
  if (e.new.hang) {
    await ctx.db.query('SELECT pg_advisory_lock_shared(44)');
    await ctx.db.query('SELECT pg_advisory_unlock_shared(44)');
  }
  await ctx.db.query('INSERT INTO direct_done (tag, pid) VALUES ($1, $2)', [e.new.tag, process.pid]);
  console.log('ran ' + e.new.tag);
};`;

const isBatchLine = (l: LogLine) => l.msg === 'run batch started';

describe('cluster: runs travel to a node in batches', () => {
  let f: Fixture;
  let nodes: Map<string, RppdProcess>;
  let directFnId: number;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE src (id serial PRIMARY KEY, v int NOT NULL);
      CREATE TABLE started (id serial PRIMARY KEY, src_id int, pid int, at timestamptz DEFAULT clock_timestamp());
      CREATE TABLE sink (id serial PRIMARY KEY, src_id int, v int, pid int);
      CREATE TRIGGER src_event AFTER INSERT ON src FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      CREATE TABLE direct (id serial PRIMARY KEY, tag text);
      CREATE TABLE direct_done (id serial PRIMARY KEY, tag text, pid int);
    `);
    const add = `INSERT INTO rppd_function (code, checksum, schema_table, lang, queue, fn_logging)
                 VALUES ($1, 'na', $2, 'js', false, true) RETURNING id`;
    await f.query(add, [SRC_FN, 'src']);
    directFnId = (await f.query<{ id: number }>(add, [DIRECT_FN, 'direct']))[0]!.id;
    nodes = await startNodes(f, names);
    await waitForReady(f, names);
    // The master keeps 2 runs, then sends the rest to the other node.
    await f.db.query('UPDATE rppd_config SET max_db_connections = 4');
  });
  after(async () => f?.close());

  async function roles() {
    const master = await waitForMasterRow(f);
    const rows = await f.query<{ id: number; host: string; host_name: string }>(
      'SELECT id, host, host_name FROM rppd_config',
    );
    const other = rows.find((r) => r.host_name !== master.host_name)!;
    return { master, worker: { id: other.id, host: other.host, proc: nodes.get(other.host_name)! } };
  }

  function directRun(runId: string, tag: string, hang = false): RunRequest {
    const input = {
      eventId: '0',
      table: 'public.direct',
      topic: '',
      trig: 1,
      op: 'INSERT',
      key: {},
      pk: [],
      old: null,
    };
    return {
      run_id: runId,
      fn_id: directFnId,
      code_hash: createHash('sha256').update(DIRECT_FN).digest('hex'),
      queue_key: 'direct',
      ordered: false,
      input_json: JSON.stringify({ ...input, new: { tag, hang } }),
      function_json: '',
    };
  }

  async function directDone(tag: string): Promise<number> {
    return (await f.query('SELECT 1 FROM direct_done WHERE tag = $1', [tag])).length;
  }

  test('several runs for one node arrive in one call and each gets its own correct result', async () => {
    const { worker } = await roles();
    const batchOfSeveral = () => worker.proc.lines.some((l) => isBatchLine(l) && (l.runs as number) >= 2);
    await feedUntil(
      () => f.db.query('INSERT INTO src (v) SELECT g FROM generate_series(1, 12) g'),
      async () => batchOfSeveral(),
      'a call carrying several runs to the worker',
    );
    await waitFor(async () => (await f.query('SELECT 1 FROM rppd_event_queue')).length === 0, {
      what: 'every event done',
    });
    const wrong = await f.query(
      `SELECT s.id FROM src s LEFT JOIN sink k ON k.src_id = s.id WHERE k.id IS NULL OR k.v <> s.v * 2`,
    );
    assert.deepEqual(wrong, [], 'every source row has its sink row with the right value');
    const twice = await f.query('SELECT src_id FROM sink GROUP BY src_id HAVING count(*) > 1');
    assert.deepEqual(twice, [], 'nothing ran twice');
    assert.deepEqual(await f.query('SELECT error_msg FROM rppd_function_log WHERE error_msg IS NOT NULL'), []);
    const onWorker = (await f.query('SELECT 1 FROM rppd_function_log WHERE node_id = $1', [worker.id])).length;
    const calls = worker.proc.lines.filter(isBatchLine).length;
    console.log(`batches: ${onWorker} runs reached the worker in ${calls} calls`);
    assert.ok(calls < onWorker, `fewer calls (${calls}) than runs (${onWorker})`);
  });

  test('a run that hangs does not hold back the results of the others in its call', async () => {
    const { master, worker } = await roles();
    await f.db.query('SELECT pg_advisory_lock(44)');
    let locked = true;
    try {
      const batch = rawRunBatch(worker.host, {
        epoch: master.epoch,
        master_id: master.id,
        functions_version: '0',
        runs: [directRun('d-hang', 'hang', true), directRun('d-a', 'a'), directRun('d-b', 'b'), directRun('d-c', 'c')],
      });
      await waitFor(() => batch.replies.length >= 3, { what: 'the results of the three quick runs' });
      assert.deepEqual(batch.replies.map((r) => r.run_id).sort(), ['d-a', 'd-b', 'd-c']);
      for (const r of batch.replies) {
        assert.equal(r.ok, true, r.error);
        assert.equal(r.output.trim(), `ran ${r.run_id.slice(2)}`);
        assert.equal(r.node_id, worker.id);
      }
      assert.equal(batch.ended, undefined, 'the call stays open for the run that hangs');
      const status = await rawStatus(worker.host, master);
      assert.ok(
        status.runs.some((r) => r.run_id === 'd-hang' && r.epoch === master.epoch),
        'the node lists the run in flight',
      );
      assert.equal(await directDone('hang'), 0);

      await f.db.query('SELECT pg_advisory_unlock(44)');
      locked = false;
      assert.equal(await batch.done, null, 'the call ends OK once every run has its result');
      const last = batch.replies.at(-1)!;
      assert.equal(last.run_id, 'd-hang');
      assert.equal(last.ok, true, last.error);
      assert.equal(batch.replies.length, 4);
      assert.equal(await directDone('hang'), 1);
      const after = await rawStatus(worker.host, master);
      assert.equal(after.runs.filter((r) => r.run_id.startsWith('d-')).length, 0, 'nothing left in flight');
    } finally {
      if (locked) await f.db.query('SELECT pg_advisory_unlock(44)');
    }
  });

  test('a run the node has other code for comes back not_found alone, and runs when sent with its code', async () => {
    const { master, worker } = await roles();
    const call = { epoch: master.epoch, master_id: master.id, functions_version: '0' };
    const other = { ...directRun('nf-other', 'other'), code_hash: 'f'.repeat(64) };
    const batch = rawRunBatch(worker.host, { ...call, runs: [directRun('nf-known', 'known'), other] });
    assert.equal(await batch.done, null);
    const byId = new Map(batch.replies.map((r) => [r.run_id, r]));
    assert.equal(byId.get('nf-known')?.ok, true);
    assert.equal(byId.get('nf-other')?.not_found, true);
    assert.equal(await directDone('known'), 1);
    assert.equal(await directDone('other'), 0, 'not started');

    const def = {
      id: directFnId,
      lang: 'js',
      code: DIRECT_FN,
      codeHash: '',
      schemaTable: 'public.direct',
      topic: '',
      timeoutMs: 60_000,
      verboseDebug: false,
      fnLogging: false,
    };
    const again = rawRunBatch(worker.host, { ...call, runs: [{ ...other, function_json: JSON.stringify(def) }] });
    assert.equal(await again.done, null);
    assert.equal(again.replies.length, 1);
    assert.equal(again.replies[0]!.not_found, false);
    assert.equal(again.replies[0]!.ok, true, again.replies[0]!.error);
    assert.equal(await directDone('other'), 1);
  });

  test('a call of a stale epoch is refused before any of its runs starts', async () => {
    const { master, worker } = await roles();
    const stale = rawRunBatch(worker.host, {
      epoch: String(BigInt(master.epoch) - 1n),
      master_id: master.id,
      functions_version: '0',
      runs: [directRun('s-1', 'stale1'), directRun('s-2', 'stale2')],
    });
    const refused = await stale.done;
    assert.equal(refused?.code, grpc.status.FAILED_PRECONDITION);
    assert.match(refused?.details ?? '', /^rppd refused: .*stale/);
    assert.deepEqual(stale.replies, []);
    // A call of the right epoch made after it has finished: had the stale runs started, they would have too.
    const current = rawRunBatch(worker.host, {
      epoch: master.epoch,
      master_id: master.id,
      functions_version: '0',
      runs: [directRun('s-3', 'current')],
    });
    assert.equal(await current.done, null);
    assert.equal(await directDone('current'), 1);
    assert.equal(await directDone('stale1'), 0);
    assert.equal(await directDone('stale2'), 0);
  });

  test('SIGKILL of a node in the middle of a call: its runs are retried once it is gone, none overlaps its retry', async () => {
    const { worker } = await roles();
    const victim = worker.proc;
    const pid = victim.proc.pid!;
    const linesBefore = victim.lines.length;
    await f.db.query('SELECT pg_advisory_lock(43)');
    let ids: number[] = [];
    let killedAt = '';
    try {
      const inserted = await f.query<{ id: number }>(
        'INSERT INTO src (v) SELECT g FROM generate_series(1, 8) g RETURNING id',
      );
      ids = inserted.map((r) => r.id);
      await waitFor(() => victim.lines.slice(linesBefore).some((l) => isBatchLine(l) && (l.runs as number) >= 2), {
        what: 'a call carrying several runs to the worker',
      });
      await waitFor(
        async () =>
          (await f.query('SELECT 1 FROM started WHERE pid = $1 AND src_id = ANY($2)', [pid, ids])).length >= 2,
        { what: 'several runs of the call running on the worker' },
      );
      await victim.kill('SIGKILL');
      // On the database clock, after the process is gone.
      killedAt = (await f.query<{ t: string }>('SELECT clock_timestamp()::text AS t'))[0]!.t;
    } finally {
      await f.db.query('SELECT pg_advisory_unlock(43)');
    }

    await waitFor(
      async () =>
        (await f.query('SELECT DISTINCT src_id FROM sink WHERE src_id = ANY($1)', [ids])).length === ids.length,
      { what: 'every event of the call done' },
    );
    const killed = (
      await f.query<{ src_id: number }>('SELECT DISTINCT src_id FROM started WHERE pid = $1 AND src_id = ANY($2)', [
        pid,
        ids,
      ])
    ).map((r) => r.src_id);
    assert.ok(killed.length >= 2, 'several runs were in flight on the killed node');
    const finishedThere = await f.query('SELECT 1 FROM sink WHERE pid = $1 AND src_id = ANY($2)', [pid, ids]);
    assert.deepEqual(finishedThere, [], 'the killed node finished none of them');
    const early = await f.query(
      'SELECT src_id FROM started WHERE src_id = ANY($1) AND pid <> $2 AND at < $3::timestamptz',
      [killed, pid, killedAt],
    );
    assert.deepEqual(early, [], 'no run was retried while the killed node could still be running it');
    const wrong = await f.query(
      'SELECT s.id FROM src s JOIN sink k ON k.src_id = s.id WHERE s.id = ANY($1) AND k.v <> s.v * 2',
      [ids],
    );
    assert.deepEqual(wrong, []);
  });
});

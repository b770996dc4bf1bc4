// Runs sent ahead (run_ahead): beyond its run slots the JS runtime sends runs to the worker
// threads, which start them in the slot of the next run to end. Against a real PostgreSQL:
// never more runs at once than slots, output and connection per run, the timeout counted from
// the start, runs behind a stuck thread taken back, a killed thread's waiting runs retried.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setImmediate } from 'node:timers/promises';
import pg from 'pg';
import type { JsRuntime } from '../../src/runtimes/js/jsRuntime.ts';
import type { RunResult } from '../../src/runtimes/runtime.ts';
import { event, fn, runtimeMaker } from '../support/jsRuntimeSupport.ts';
import { type PgServer, startPg } from '../support/pgServer.ts';
import { waitFor } from '../support/waitFor.ts';

let server: PgServer;
let db: pg.Pool;
let cacheDir: string;

const runtimes = runtimeMaker(() => ({ dbUrl: server.url, cacheDir }));
const runtime = runtimes.create;

// Records when it ran, on which connection, and how many ran at once; prints its own tag.
const recorded = fn(`export default async (event, ctx) => {
  const tag = event.key.id;
  await ctx.db.query('update ahead_conc set cur = cur + 1, peak = greatest(peak, cur + 1) where id = 1');
  console.log('start', tag);
  const { rows } = await ctx.db.query('select pg_backend_pid() as pid');
  await new Promise((resolve) => setTimeout(resolve, event.new.ms));
  await ctx.db.query('update ahead_conc set cur = cur - 1 where id = 1');
  await ctx.db.query('insert into ahead_log (tag, pid) values ($1, $2)', [tag, rows[0].pid]);
  console.log('end', tag);
};`);

const run = (rt: JsRuntime, tag: number, ms: number, def = recorded) =>
  rt.run(def, event({ key: { id: tag }, new: { id: tag, ms } }));

describe('JS runtime: runs sent ahead', () => {
  before(async () => {
    server = await startPg();
    db = new pg.Pool({ connectionString: server.url, max: 2 });
    await db.query(`
      CREATE TABLE ahead_conc (id int PRIMARY KEY, cur int NOT NULL DEFAULT 0, peak int NOT NULL DEFAULT 0);
      CREATE TABLE ahead_log (n serial PRIMARY KEY, tag int, pid int);`);
    cacheDir = mkdtempSync(join(tmpdir(), 'rppd-js-ahead-'));
  });
  after(async () => {
    await runtimes.closeAll();
    await db?.end();
    await server?.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  test('8 runs on 2 slots: 2 at a time, each with its own output, on the slots’ 2 connections', async () => {
    await db.query('DELETE FROM ahead_log; DELETE FROM ahead_conc; INSERT INTO ahead_conc (id) VALUES (1)');
    const rt = runtime({ maxWorkers: 2, maxThreads: 1 });
    const tags = [1, 2, 3, 4, 5, 6, 7, 8];
    const results = await Promise.all(tags.map((tag) => run(rt, tag, 50)));
    for (const [i, result] of results.entries()) {
      assert.equal(result.error, undefined);
      assert.equal(result.output, `start ${tags[i]}\nend ${tags[i]}\n`);
    }
    const [conc] = (await db.query('SELECT peak, cur FROM ahead_conc')).rows;
    assert.deepEqual(conc, { peak: 2, cur: 0 });
    const { rows } = await db.query('SELECT count(*)::int AS runs, count(DISTINCT pid)::int AS pids FROM ahead_log');
    assert.deepEqual(rows[0], { runs: 8, pids: 2 });
  });

  test('runs handed over in one turn go ahead only where a place is kept for them', async () => {
    await db.query('DELETE FROM ahead_log; DELETE FROM ahead_conc; INSERT INTO ahead_conc (id) VALUES (1)');
    // 4 slots on 2 threads: 2 places ahead in each.
    const rt = runtime({ maxWorkers: 4, maxThreads: 2, prewarm: true });
    const pending = [1, 2, 3, 4].map((tag) => run(rt, 40 + tag, 1500));
    await waitFor(async () => ((await db.query('SELECT cur FROM ahead_conc')).rows[0].cur === 4 ? true : undefined), {
      what: 'the 4 long runs running',
    });
    // One run waits ahead in one thread; then three in one turn: the other thread has fewer
    // waiting, but only 2 places, so the third goes to the first thread (before, it was turned
    // away as "not begun" and retried after a back-off).
    pending.push(run(rt, 45, 10));
    // Its way to the thread is promise continuations only: done before the next macrotask.
    await setImmediate();
    for (const tag of [46, 47, 48]) pending.push(run(rt, tag, 10));
    const results = await Promise.all(pending);
    assert.deepEqual(
      results.filter((r) => !r.ok).map((r) => r.error),
      [],
    );
  });

  test('a run sent ahead has its whole timeout from its start, not from when it was sent', async () => {
    const rt = runtime({ maxWorkers: 1, maxThreads: 1 });
    const timed = { ...fn(recorded.code), timeoutMs: 1500 };
    // Each run takes 600 ms: the fourth starts ~1.8 s after it was handed over, well past 1.5 s.
    const results = await Promise.all([1, 2, 3, 4].map((tag) => run(rt, 10 + tag, 600, timed)));
    assert.deepEqual(
      results.map((r) => [r.ok, r.kind]),
      [
        [true, undefined],
        [true, undefined],
        [true, undefined],
        [true, undefined],
      ],
    );
  });

  test('a run waiting ahead behind a thread stuck in a loop is started on a thread with a free slot', async () => {
    await db.query(`CREATE TABLE ahead_gate (open bool NOT NULL); INSERT INTO ahead_gate VALUES (false)`);
    const rt = runtime({ maxWorkers: 2, maxThreads: 2 });
    const stuck = fn(`export default async () => { const until = Date.now() + 4000; while (Date.now() < until) {} };`);
    const gated = fn(`export default async (event, ctx) => {
  while (!(await ctx.db.query('select open from ahead_gate')).rows[0].open) await new Promise((r) => setTimeout(r, 10));
  console.log('gated');
};`);
    const quick = fn(`export default async (event) => { console.log('quick', event.key.id); };`);
    // One run holds each thread: the loop, then one waiting for the gate.
    const loop = rt.run(stuck, event());
    await waitFor(() => rt.stats().busy === 1, { what: 'the loop to start', intervalMs: 5 });
    const first = rt.run(gated, event());
    await waitFor(() => rt.stats().busy === 2, { what: 'the gated run to start', intervalMs: 5 });
    // Both slots busy: these two go ahead, the first of them to the looping thread.
    const waiting = [2, 3].map((id) => rt.run(quick, event({ key: { id } })));
    await waitFor(() => rt.stats().waiting === 2, { what: 'the runs sent ahead', intervalMs: 5 });
    await db.query('UPDATE ahead_gate SET open = true');
    const done: string[] = [];
    const track = (name: string, p: Promise<RunResult>) =>
      p.then((r) => {
        done.push(name);
        return r;
      });
    const results = await Promise.all([track('gated', first), ...waiting.map((p, i) => track(`quick ${i + 2}`, p))]);
    assert.deepEqual(
      results.map((r) => r.output),
      ['gated\n', 'quick 2\n', 'quick 3\n'],
    );
    const looped = await track('loop', loop);
    assert.equal(looped.ok, true, looped.error);
    assert.equal(done.at(-1), 'loop', `the other runs finished before the 4 s loop: ${done.join(', ')}`);
  });

  test('runs waiting ahead in a thread that is stopped by a timeout end as not begun (retried)', async () => {
    const rt = runtime({ maxWorkers: 1, maxThreads: 1 });
    const hang = fn(`export default async () => { while (true) {} };`, { timeoutMs: 500 });
    const quick = fn(`export default async () => { console.log('never'); };`);
    const hung = rt.run(hang, event());
    await waitFor(() => rt.stats().busy === 1, { what: 'the loop to start', intervalMs: 5 });
    const behind = rt.run(quick, event());
    const [h, b] = await Promise.all([hung, behind]);
    assert.equal(h.kind, 'timeout');
    assert.equal(b.kind, 'internal');
    assert.match(b.error ?? '', /before the run began; the run is retried/);
    assert.equal(b.output, '');
    // The runtime goes on with a new thread.
    assert.equal((await rt.run(quick, event())).output, 'never\n');
  });

  test('process.exit in a run the thread started ahead is blamed on that run, not on the one before', async () => {
    const rt = runtime({ maxWorkers: 1, maxThreads: 1 });
    const slowOk = fn(
      `export default async () => { await new Promise((r) => setTimeout(r, 300)); console.log('fine'); };`,
    );
    const exits = fn(`export default async () => { process.exit(3); };`);
    const a = rt.run(slowOk, event());
    // Compiling takes its time: make sure the slow run holds the slot before the other is handed over.
    await waitFor(() => rt.stats().busy === 1, { what: 'the first run to start', intervalMs: 5 });
    const [ra, b] = await Promise.all([a, rt.run(exits, event())]);
    const a2 = ra;
    assert.deepEqual([a2.ok, a2.output], [true, 'fine\n']);
    assert.equal(b.kind, 'exit', b.error);
  });

  test('run_ahead off: runs beyond the slots wait in the parent, as before', async () => {
    const rt = runtime({ maxWorkers: 1, maxThreads: 1, runAhead: false });
    const results = await Promise.all([21, 22, 23].map((tag) => run(rt, tag, 20)));
    assert.ok(results.every((r) => r.ok));
  });
});

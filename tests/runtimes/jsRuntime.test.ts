// The JS/TS runtime against a real PostgreSQL: what functions receive, how each kind of
// failure comes back, and how the worker pool behaves. Waits are on conditions, never sleeps.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import type { JsRuntime } from '../../src/runtimes/js/jsRuntime.ts';
import { event, fn, runtimeMaker } from '../support/jsRuntimeSupport.ts';
import { type PgServer, startPg } from '../support/pgServer.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
let server: PgServer;
let db: pg.Pool;
let cacheDir: string;
let rt: JsRuntime;
const workerErrors: string[] = [];

const runtimes = runtimeMaker(() => ({ dbUrl: server.url, cacheDir }));
const runtime = runtimes.create;

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function scalar(text: string, params: unknown[] = []): Promise<unknown> {
  const { rows } = await db.query(text, params);
  return Object.values(rows[0] ?? {})[0];
}

// Holds every run at a gate row until the test opens it, counting how many run at once.
const gated = fn(`
export default async (event, ctx) => {
  const id = event.key.id;
  await ctx.db.query('update conc set cur = cur + 1, started = started + 1, peak = greatest(peak, cur + 1) where id = $1', [id]);
  for (;;) {
    const { rows } = await ctx.db.query('select gate from conc where id = $1', [id]);
    if (rows[0].gate) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await ctx.db.query('update conc set cur = cur - 1 where id = $1', [id]);
};`);

describe('JS/TS runtime', () => {
  before(async () => {
    server = await startPg();
    db = new pg.Pool({ connectionString: server.url, max: 3 });
    db.on('error', () => undefined); // the restart test kills idle connections
    await db.query(`
      CREATE TABLE src (id int PRIMARY KEY, name text);
      CREATE TABLE sink (id int, name text);
      CREATE TABLE conc (id int PRIMARY KEY, cur int DEFAULT 0, peak int DEFAULT 0, started int DEFAULT 0, gate bool DEFAULT false);
      INSERT INTO src VALUES (1, 'ada'), (2, 'grace');`);
    cacheDir = mkdtempSync(join(tmpdir(), 'rppd-js-cache-'));
    rt = runtime({ onWorkerError: (message) => workerErrors.push(message) });
  });

  after(async () => {
    await runtimes.closeAll();
    await db?.end();
    await server?.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  test('a JS function reads a source row and inserts a sink row through ctx.db', async () => {
    const copy = fn(`
export default async (event, ctx) => {
  const { rows } = await ctx.db.query('select name from src where id = $1', [event.key.id]);
  const result = await ctx.db.query('insert into sink values ($1, $2)', [event.key.id, rows[0].name.toUpperCase()]);
  ctx.log('inserted', result.rowCount);
};`);
    const result = await rt.run(copy, event({ key: { id: 2 }, pk: [2] }));
    assert.equal(result.error, undefined);
    assert.equal(result.ok, true);
    assert.equal(result.output, 'inserted 1\n');
    assert.ok(result.tookMs > 0);
    assert.equal(await scalar('select name from sink where id = 2'), 'GRACE');
  });

  test('a TypeScript function with type annotations runs, and its errors point at TypeScript lines', async () => {
    const code = `interface Row { id: number; name: string }
type Ctx = { log: (...args: unknown[]) => void };
enum Mode { Loud = 'loud' }
const shout = (row: Row, mode: Mode): string => (mode === Mode.Loud ? row.name.toUpperCase() : row.name);
export default async (event: { new: Row | null }, ctx: Ctx): Promise<void> => {
  ctx.log(shout(event.new!, Mode.Loud));
  if (event.new!.id === 7) {
    (null as unknown as { boom(): void }).boom();
  }
};`;
    const ok = await rt.run(fn(code, { lang: 'ts' }), event());
    assert.equal(ok.error, undefined);
    assert.equal(ok.output, 'ADA\n');
    const failed = await rt.run(fn(code, { lang: 'ts' }), event({ new: { id: 7, name: 'x' } }));
    assert.equal(failed.kind, 'function');
    assert.match(failed.error!, /^TypeError: .*boom.* on run \[public\.src\]@\.id: line 8:/);
  });

  test('the event carries table, topic, trig, op, key, pk, new, old and eventId; ctx.fn names the function', async () => {
    const echo = fn(`export default async (event, ctx) => { console.log(JSON.stringify({ event, fn: ctx.fn })); };`, {
      schemaTable: 'public.src',
      topic: '.id',
    });
    const input = event({
      eventId: '9007199254740993',
      trig: 0,
      op: 'UPDATE',
      key: { id: 1 },
      pk: [1],
      new: { id: 1, name: 'ada2' },
      old: { id: 1, name: 'ada' },
    });
    const result = await rt.run(echo, input);
    assert.equal(result.error, undefined);
    const seen = JSON.parse(result.output);
    assert.deepEqual(seen.event, input);
    assert.deepEqual(seen.fn, { id: echo.id, schemaTable: 'public.src', topic: '.id' });
  });

  test('console methods and ctx.log are captured per run, for failed runs too', async () => {
    const chatty = fn(`export default async (event, ctx) => {
  console.log('log', 1); console.info('info'); console.warn('warn'); console.error('error'); console.debug('debug', { a: 1 });
  ctx.log('ctx');
  if (event.key.id === 2) throw new Error('after output');
};`);
    const ok = await rt.run(chatty, event());
    assert.equal(ok.output, 'log 1\ninfo\nwarn\nerror\ndebug { a: 1 }\nctx\n');
    const failed = await rt.run(chatty, event({ key: { id: 2 } }));
    assert.equal(failed.kind, 'function');
    assert.equal(failed.output, ok.output);
    const quiet = await rt.run(fn('export default async () => {};'), event());
    assert.equal(quiet.output, '');
  });

  test('output beyond outputLimitBytes is cut after the start of a multi-MB log', async () => {
    const flood = fn(`export default async () => {
  const line = 'x'.repeat(1000);
  for (let i = 0; i < 4096; i++) console.log(i, line);
  console.log('z'.repeat(3 * 1024 * 1024));
};`);
    const result = await rt.run(flood, event());
    assert.equal(result.ok, true);
    assert.ok(result.output.startsWith(`0 ${'x'.repeat(1000)}\n1 `));
    assert.ok(result.output.endsWith('\n[rppd: output truncated at 65536 bytes]'), result.output.slice(-80));
    assert.ok(Buffer.byteLength(result.output) <= 64 * 1024 + 60);
    assert.ok(!result.output.includes('zzz'));
  });

  test('a throw fails the run as function, naming the error, the run and the line', async () => {
    const thrower = fn(`export default async (event) => {
  const helper = undefined;
  helper();
};`);
    const result = await rt.run(thrower, event());
    assert.equal(result.ok, false);
    assert.equal(result.kind, 'function');
    assert.equal(result.error, 'TypeError: helper is not a function on run [public.src]@.id: line 3:3');
    const badQuery = fn(`export default async (e, ctx) => { await ctx.db.query('select * from no_such_table'); };`);
    const dbError = await rt.run(badQuery, event());
    assert.equal(dbError.kind, 'function');
    assert.match(dbError.error!, /^DatabaseError: relation "no_such_table" does not exist \(SQLSTATE 42P01\) on run/);
  });

  test('verbose_debug adds the code and the input to the error', async () => {
    const code = `export default async () => { throw new Error('verbose boom'); };`;
    const result = await rt.run(fn(code, { verboseDebug: true }), event({ eventId: '777' }));
    assert.equal(result.kind, 'function');
    assert.match(result.error!, /^Error: verbose boom on run/);
    assert.ok(result.error!.includes(code));
    assert.ok(result.error!.includes('"eventId": "777"'));
  });

  test('syntax errors in JS and TS fail as compile with their line', async () => {
    const js = await rt.run(fn('export default async () => {\n  const x = ;\n};'), event());
    assert.equal(js.kind, 'compile');
    assert.match(js.error!, /^SyntaxError: .* on run \[public\.src\]@\.id: line 2:13$/);
    const ts = await rt.run(fn('export default async (e: number) => {\n  let y: = 1;\n};', { lang: 'ts' }), event());
    assert.equal(ts.kind, 'compile');
    assert.match(ts.error!, /^SyntaxError: .*line 2:/);
  });

  test('a module without a default function, or one that fails to load, fails as compile', async () => {
    const none = await rt.run(fn('export const handler = async () => {};'), event());
    assert.equal(none.kind, 'compile');
    assert.match(none.error!, /has no default export/);
    const notFunction = await rt.run(fn('export default 42;'), event());
    assert.equal(notFunction.kind, 'compile');
    assert.match(notFunction.error!, /default export is a number/);
    const missing = await rt.run(fn("import 'no-such-package-rppd';\nexport default async () => {};"), event());
    assert.equal(missing.kind, 'compile');
    assert.match(missing.error!, /no-such-package-rppd/);
    const topLevel = await rt.run(fn("const a = 1;\nthrow new RangeError('at load');\nexport default a;"), event());
    assert.equal(topLevel.kind, 'compile');
    assert.match(topLevel.error!, /RangeError: at load on run .*: line 2:7$/);
  });

  test('process.exit(3) fails as exit, and the next run works', async () => {
    const exiter = fn(`export default async () => { console.log('leaving'); process.exit(3); };`);
    const result = await rt.run(exiter, event());
    assert.equal(result.kind, 'exit');
    assert.match(result.error!, /exit code 3/);
    assert.equal(result.output, 'leaving\n');
    const next = await rt.run(fn(`export default async () => { console.log('still here'); };`), event());
    assert.equal(next.ok, true);
    assert.equal(next.output, 'still here\n');
  });

  test('a sync infinite loop fails as timeout after timeoutMs, and the runtime keeps working', async () => {
    const spinner = fn(`export default async () => { console.log('spinning'); while (true) {} };`, { timeoutMs: 1500 });
    const result = await rt.run(spinner, event());
    assert.equal(result.kind, 'timeout');
    assert.match(result.error!, /1500 ms/);
    assert.equal(result.output, 'spinning\n');
    assert.ok(result.tookMs >= 1400, `tookMs ${result.tookMs}`); // timers may fire a little early
    const next = await rt.run(fn('export default async () => {};'), event());
    assert.equal(next.ok, true);
  });

  test('a memory bomb fails as memory with memoryLimitMb=64', async () => {
    const bomb = fn(`export default async () => {
  const hoard = [];
  for (;;) hoard.push(new Array(100_000).fill(hoard.length));
};`);
    const result = await rt.run(bomb, event());
    assert.equal(result.kind, 'memory');
    assert.match(result.error!, /64 MiB/);
    assert.equal((await rt.run(fn('export default async () => {};'), event())).ok, true);
  });

  test('a connection lost under the function is transient, and the next run reconnects', async () => {
    const suicide = fn(`export default async (event, ctx) => {
  try {
    await ctx.db.query('select pg_terminate_backend(pg_backend_pid())');
  } catch (err) {
    throw new Error('wrapped', { cause: err });
  }
};`);
    const result = await rt.run(suicide, event());
    assert.equal(result.kind, 'transient', result.error);
    const next = await rt.run(fn(`export default async (e, ctx) => { await ctx.db.query('select 1'); };`), event());
    assert.equal(next.ok, true, next.error);
  });

  test('after a server restart a run is transient or succeeds, and later runs succeed', async () => {
    const own = runtime({ maxWorkers: 1 });
    const insert = fn(`export default async (event, ctx) => {
  await ctx.db.query('insert into sink values ($1, $2)', [event.key.id, 'restart']);
};`);
    assert.equal((await own.run(insert, event({ key: { id: 100 } }))).ok, true);
    await server.restart('immediate');
    const first = await own.run(insert, event({ key: { id: 101 } }));
    assert.ok(first.ok || first.kind === 'transient', `${first.kind}: ${first.error}`);
    for (const id of [102, 103]) {
      const later = await own.run(insert, event({ key: { id } }));
      assert.equal(later.ok, true, later.error);
    }
    const ids = (await db.query(`select id from sink where name = 'restart' order by id`)).rows;
    assert.deepEqual(
      ids.map((r) => r.id),
      first.ok ? [100, 101, 102, 103] : [100, 102, 103],
    );
  });

  test('a transaction the function left open is rolled back before the next run', async () => {
    const own = runtime({ maxWorkers: 1 });
    const open = fn(`export default async (event, ctx) => {
  await ctx.db.query('begin');
  await ctx.db.query('insert into sink values (200, $1)', ['open-tx']);
};`);
    assert.equal((await own.run(open, event())).ok, true);
    const autocommit = fn(
      `export default async (e, ctx) => { await ctx.db.query("insert into sink values (201, 'open-tx')"); };`,
    );
    assert.equal((await own.run(autocommit, event())).ok, true);
    const ids = (await db.query(`select id from sink where name = 'open-tx'`)).rows.map((r) => r.id);
    assert.deepEqual(ids, [201]);
  });

  test('code is compiled once per (id, codeHash): a new hash picks up new code', async () => {
    const first = fn(`export default async () => { console.log('version A'); };`);
    assert.equal((await rt.run(first, event())).output, 'version A\n');
    const file = join(cacheDir, `fn-${first.id}-${first.codeHash.slice(0, 12)}.mjs`);
    assert.ok(existsSync(file));
    const writtenAt = statSync(file).mtimeMs;
    const second = { ...fn(`export default async () => { console.log('version B'); };`), id: first.id };
    assert.equal((await rt.run(second, event())).output, 'version B\n');
    // Same (id, hash) again: the compiled file is reused, not rewritten, even if the code differs.
    const sameHash = { ...first, code: `export default async () => { console.log('not compiled'); };` };
    assert.equal((await rt.run(sameHash, event())).output, 'version A\n');
    assert.equal(statSync(file).mtimeMs, writtenAt);
  });

  test('a worker that has loaded 32 outdated versions of functions is replaced', async () => {
    const own = runtime({ maxWorkers: 1 });
    const { id } = fn('');
    const counts: string[] = [];
    for (let version = 1; version <= 34; version++) {
      const code = `// version ${version}\nexport default async () => { globalThis.loads = (globalThis.loads ?? 0) + 1; console.log(globalThis.loads); };`;
      const result = await own.run({ ...fn(code), id }, event());
      counts.push(result.output.trim());
    }
    // Versions 1..33 share one worker; loading version 33 made 32 outdated, so version 34 gets a fresh one.
    assert.deepEqual(counts, [...Array.from({ length: 33 }, (_, i) => String(i + 1)), '1']);
  });

  test('maxWorkers=3 with 6 runs: exactly 3 run at once across the threads, the rest wait; idle threads are reaped to 1', async () => {
    const pool = runtime({ maxWorkers: 3, idleMs: 200 });
    await db.query('insert into conc (id) values (1)');
    const runs = Array.from({ length: 6 }, () => pool.run(gated, event({ key: { id: 1 } })));
    await waitFor('3 busy and 3 waiting', async () => {
      const { busy, waiting } = pool.stats();
      return busy === 3 && waiting === 3 && (await scalar('select started from conc where id = 1')) === 3;
    });
    // One thread per core, never more than maxWorkers; the 3 runs share them.
    assert.equal(pool.stats().workers, Math.min(availableParallelism(), 3));
    await db.query('update conc set gate = true where id = 1');
    const results = await Promise.all(runs);
    assert.deepEqual(
      results.map((r) => r.error),
      Array(6).fill(undefined),
    );
    assert.equal(await scalar('select peak from conc where id = 1'), 3);
    assert.equal(await scalar('select started from conc where id = 1'), 6);
    await waitFor('idle workers reaped', () => pool.stats().workers === 1);
  });

  test('setMaxWorkers lowers the cap live', async () => {
    const pool = runtime({ maxWorkers: 3 });
    pool.setMaxWorkers(1);
    await db.query('insert into conc (id) values (2)');
    const runs = Array.from({ length: 3 }, () => pool.run(gated, event({ key: { id: 2 } })));
    await waitFor('1 busy and 2 waiting', async () => {
      const { busy, waiting } = pool.stats();
      return busy === 1 && waiting === 2 && (await scalar('select started from conc where id = 2')) === 1;
    });
    await db.query('update conc set gate = true where id = 2');
    assert.ok((await Promise.all(runs)).every((r) => r.ok));
    assert.equal(await scalar('select peak from conc where id = 2'), 1);
  });

  test('two runs in one thread each capture only their own console output and use their own connection', async () => {
    // Two threads (one per core by default) and two runs per thread.
    const cores = 2;
    const own = runtime({ maxWorkers: 2 * cores, maxThreads: cores });
    const pids = fn(`export default async (event, ctx) => {
  const tag = event.key.id;
  await ctx.db.query('begin');
  const { rows } = await ctx.db.query('select pg_backend_pid() as pid');
  for (let i = 0; i < 5; i++) {
    console.log('run', tag, i);
    ctx.log('ctx', tag, i);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await ctx.db.query('commit');
  console.log('pid', rows[0].pid);
};`);
    const ids = Array.from({ length: 2 * cores }, (_, i) => i + 1);
    const results = await Promise.all(ids.map((id) => own.run(pids, event({ key: { id } }))));
    assert.equal(own.stats().workers, cores);
    const expected = (tag: number) =>
      `${Array.from({ length: 5 }, (_, i) => `run ${tag} ${i}\nctx ${tag} ${i}\n`).join('')}pid `;
    for (const [i, result] of results.entries()) {
      assert.equal(result.error, undefined);
      assert.ok(result.output.startsWith(expected(i + 1)), result.output);
    }
    // Each run had a connection of its own (its own transaction).
    const seen = new Set(results.map((r) => /pid (\d+)/.exec(r.output)?.[1]));
    assert.equal(seen.size, 2 * cores);
  });

  test('runs share a thread: each captures only its own output; a timeout interrupts only its thread', async () => {
    // Two threads (one per core by default) and two runs per thread.
    const cores = 2;
    const own = runtime({ maxWorkers: 2 * cores, maxThreads: cores });
    const sleeper = fn(`export default async (event) => {
  console.log('start', event.key.id);
  await new Promise((resolve) => setTimeout(resolve, 150));
  console.log('end', event.key.id);
};`);
    // 2 runs per thread, all at once: every one sees only its own lines.
    const ids = Array.from({ length: 2 * cores }, (_, i) => i + 1);
    const quiet = await Promise.all(ids.map((id) => own.run(sleeper, event({ key: { id } }))));
    for (const [i, result] of quiet.entries()) assert.equal(result.output, `start ${i + 1}\nend ${i + 1}\n`);
    assert.equal(own.stats().workers, cores);

    // Three slow runs, then a spinner: it goes to the thread with one slow run (least-loaded
    // first); the runs on the other thread finish after the spinner's thread is stopped.
    const slow = fn(`export default async (event) => {
  console.log('waiting', event.key.id);
  await new Promise((resolve) => setTimeout(resolve, 3000));
};`);
    const spinner = fn(
      `export default async () => { console.log('spinning'); await new Promise((r) => setTimeout(r, 300)); while (true) {} };`,
      { timeoutMs: 1500 },
    );
    const others = ids.slice(1).map((id) => own.run(slow, event({ key: { id } })));
    const spun = await own.run(spinner, event());
    assert.equal(spun.kind, 'timeout');
    assert.equal(spun.output, 'spinning\n');
    const results = await Promise.all(others);
    const interrupted = results.filter((r) => r.kind === 'internal');
    assert.equal(interrupted.length, 1, JSON.stringify(results));
    assert.match(interrupted[0]!.error!, /another function in the same worker timed out/);
    assert.match(interrupted[0]!.output, /^waiting \d+\n$/);
    assert.equal(results.filter((r) => r.ok).length, 2 * cores - 2);
    assert.equal((await own.run(sleeper, event({ key: { id: 9 } }))).output, 'start 9\nend 9\n');
  });

  test('process.exit in one run fails that run as exit and the others in its thread as internal', async () => {
    const cores = 2;
    const own = runtime({ maxWorkers: 2 * cores, maxThreads: cores });
    const exiter = fn(`export default async () => { await new Promise((r) => setTimeout(r, 300)); process.exit(4); };`);
    const slow = fn(`export default async () => { await new Promise((resolve) => setTimeout(resolve, 1500)); };`);
    const first = own.run(exiter, event());
    const others = Array.from({ length: 2 * cores - 1 }, () => own.run(slow, event()));
    const results = await Promise.all([first, ...others]);
    assert.equal(results[0]!.kind, 'exit');
    assert.match(results[0]!.error!, /exit code 4/);
    const interrupted = results.slice(1).filter((r) => r.kind === 'internal');
    assert.equal(interrupted.length, 1, JSON.stringify(results));
    assert.match(interrupted[0]!.error!, /another function in the same worker exited/);
    assert.equal(results.slice(1).filter((r) => r.ok).length, 2 * cores - 2);
  });

  test("output of a stray timer after its run ended does not reach the next run's output", async () => {
    const own = runtime({ maxWorkers: 1 });
    const leaky = fn(`export default async () => {
  globalThis.leak = setInterval(() => console.log('stray'), 5);
  console.log('mine');
};`);
    assert.equal((await own.run(leaky, event())).output, 'mine\n');
    const next = fn(`export default async () => {
  await new Promise((resolve) => setTimeout(resolve, 100));
  clearInterval(globalThis.leak);
  console.log('next');
};`);
    assert.equal((await own.run(next, event())).output, 'next\n');
  });

  test('a stray timer that throws after its run crashes only its worker, which is replaced', async () => {
    const stray = fn(`export default async () => { setTimeout(() => { throw new Error('late'); }, 10); };`);
    const before = workerErrors.length;
    assert.equal((await rt.run(stray, event())).ok, true);
    await waitFor('the worker crash report', () => workerErrors.length > before);
    assert.match(workerErrors.at(-1)!, /^Error: late .*line 1:/);
    const next = await rt.run(fn(`export default async () => { console.log('alive'); };`), event());
    assert.equal(next.output, 'alive\n');
  });

  test('close() ends a run still going after graceMs as internal and ends the DB connections', async () => {
    const url = await server.createDatabase('closing');
    const own = runtime({ dbUrl: url, maxWorkers: 1 });
    const hang = fn(
      `export default async (e, ctx) => { await ctx.db.query('select 1'); await new Promise(() => {}); };`,
    );
    const running = own.run(hang, event());
    const connections = () => scalar(`select count(*)::int from pg_stat_activity where datname = 'closing'`);
    await waitFor('the function connected', async () => (await connections()) === 1);
    await own.close(200);
    const result = await running;
    assert.equal(result.kind, 'internal');
    assert.match(result.error!, /closed/);
    await waitFor('its connection ended', async () => (await connections()) === 0);
    assert.equal((await own.run(hang, event())).kind, 'internal');
  });

  test('started ahead of time, threads connect their run slots and load prepared functions before any run', async () => {
    const url = await server.createDatabase('prepared');
    const marker = join(mkdtempSync(join(tmpdir(), 'rppd-preload-')), 'loaded');
    const own = runtime({ dbUrl: url, maxWorkers: 4, maxThreads: 2, prewarm: true });
    const connections = () =>
      scalar(
        `select count(*)::int from pg_stat_activity where datname = 'prepared' and application_name = 'rppd-js-function'`,
      );
    await waitFor('4 slot connections', async () => (await connections()) === 4);
    const loaded = fn(
      `import { writeFileSync } from 'node:fs';
       writeFileSync(${JSON.stringify(marker)}, 'top level ran');
       export default async (e, ctx) => (await ctx.db.query('select 1 as one')).rows[0].one;`,
    );
    own.prepare!([loaded]);
    await waitFor('the module loaded without a run', () => existsSync(marker));
    const results = await Promise.all([1, 2, 3, 4].map(() => own.run(loaded, event())));
    assert.deepEqual(
      results.map((r) => r.ok),
      [true, true, true, true],
    );
    assert.equal(await connections(), 4, 'the runs used the connections opened at start');
  });

  test('workers start whether the parent runs under node --import tsx or tsx register()', async () => {
    const script = (prelude: string) => `${prelude}
const { makeJsRuntime } = await import(${JSON.stringify(new URL('../../src/runtimes/js/jsRuntime.ts', import.meta.url).href)});
const rt = makeJsRuntime({ dbUrl: 'postgres://unused@127.0.0.1:1/none', maxWorkers: 1, outputLimitBytes: 1024, memoryLimitMb: 64, cacheDir: ${JSON.stringify(cacheDir)} });
const code = 'export default async (e: { key: { id: number } }) => { console.log(e.key.id * 2); };';
const fn = { id: 9999, lang: 'ts', code, codeHash: 'startmodes', schemaTable: 'public.src', topic: '', timeoutMs: 30000, verboseDebug: false, fnLogging: false };
const result = await rt.run(fn, { eventId: '1', table: 'public.src', topic: '', trig: 1, op: 'INSERT', key: { id: 21 }, pk: [21], new: null, old: null });
await rt.close();
console.log(JSON.stringify(result));`;
    const runNode = promisify(execFile);
    const modes: Array<[string, string[], string]> = [
      ['--import tsx', ['--import', 'tsx'], ''],
      ['register()', [], `import { register } from 'tsx/esm/api';\nregister();`],
    ];
    for (const [mode, flags, prelude] of modes) {
      const { stdout } = await runNode(process.execPath, [...flags, '--input-type=module', '--eval', script(prelude)], {
        cwd: repoRoot,
        timeout: 60_000,
      });
      const result = JSON.parse(stdout.trim().split('\n').at(-1)!);
      assert.deepEqual([mode, result.ok, result.output], [mode, true, '42\n']);
    }
  });
});

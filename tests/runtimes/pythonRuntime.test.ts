// The Python runtime against a real PostgreSQL: what the code sees, what comes back, and how failures end.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { findPython, firstUsablePython } from '../../src/runtimes/python/findPython.ts';
import { makePythonRuntime } from '../../src/runtimes/python/pythonRuntime.ts';
import type { Runtime, RuntimeOptions } from '../../src/runtimes/runtime.ts';
import { type PgServer, startPg } from '../support/pgServer.ts';
import { waitFor } from '../support/waitFor.ts';
import {
  type BarrierRow,
  barrierTableDdl,
  event,
  fn,
  groupBarrierCode,
  interpreterWrapper,
  psycopg3Only,
  sql,
} from './fixtures/python.ts';

let server: PgServer;
let scratch: string;
const runtimes: Runtime[] = [];

before(async () => {
  server = await startPg();
  scratch = mkdtempSync(join(tmpdir(), 'rppd-pytest-'));
});

after(async () => {
  await Promise.all(runtimes.map((rt) => rt.close(1000)));
  await server?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

function runtime(dbUrl: string, overrides: Partial<RuntimeOptions> = {}): Runtime {
  const rt = makePythonRuntime({
    dbUrl,
    maxWorkers: 2,
    outputLimitBytes: 64 * 1024,
    memoryLimitMb: 256,
    cacheDir: scratch,
    ...overrides,
  });
  runtimes.push(rt);
  return rt;
}

const drivers = [
  { name: 'psycopg2', module: 'psycopg2.extensions', python: () => undefined },
  { name: 'psycopg', module: 'psycopg', python: () => psycopg3Only(scratch) },
];

for (const driver of drivers) {
  describe(`Python runtime with ${driver.name}: the database`, () => {
    let url: string;
    let rt: Runtime;

    before(async () => {
      url = await server.createDatabase(`py_${driver.name}`);
      await sql(url, 'CREATE TABLE test (a int, b text)');
      await sql(url, "INSERT INTO test VALUES (5, 'five'), (6, 'six')");
      rt = runtime(url, { maxWorkers: 1, pythonPath: driver.python() });
    });

    test(`DB is a ${driver.name} connection`, async () => {
      const result = await rt.run(fn('print(type(DB).__module__, DB.autocommit)'), event());
      assert.equal(result.output, `${driver.module} False\n`);
    });

    test("the seed's first sample selects by PK and inserts TOPIC-TRIG", async () => {
      const code = [
        'sql = "SELECT * FROM {} where a = %s".format(TABLE)',
        'print(sql)',
        '',
        'cur = DB.cursor()',
        'cur.execute(sql, (PK))',
        'print(cur.fetchall())',
        '',
        'cur.execute("insert into test (b) values (%s)", ( "{}-{}".format(TOPIC, TRIG),))',
        'DB.commit()',
      ].join('\n');
      const result = await rt.run(fn(code), event());
      assert.equal(result.ok, true, result.error);
      assert.equal(result.output, "SELECT * FROM public.test where a = %s\n[(5, 'five')]\n");
      const named = await rt.run(fn(code, { topic: 'orders' }), event({ topic: 'orders', trig: 0, op: 'UPDATE' }));
      assert.equal(named.ok, true, named.error);
      const rows = await sql(url, 'SELECT b FROM test WHERE a IS NULL ORDER BY b');
      assert.deepEqual(
        rows.map((r) => r.b),
        ['-1', 'orders-0'],
      );
    });

    test("the seed's second sample prints the whole table", async () => {
      const code = 'cur = DB.cursor()\ncur.execute("SELECT * FROM {} ".format(TABLE))\nprint(cur.fetchall())';
      const result = await rt.run(fn(code), event());
      assert.equal(result.ok, true, result.error);
      assert.match(result.output, /^\[\(5, 'five'\), \(6, 'six'\)/);
    });

    test('an insert left uncommitted by successful code is committed', async () => {
      const result = await rt.run(fn('DB.cursor().execute("insert into test values (100, \'kept\')")'), event());
      assert.equal(result.ok, true, result.error);
      assert.deepEqual(await sql(url, 'SELECT b FROM test WHERE a = 100'), [{ b: 'kept' }]);
    });

    test('a failed statement rolls the run back and does not poison the next run', async () => {
      const bad =
        'cur = DB.cursor()\ncur.execute("insert into test values (101, \'lost\')")\ncur.execute("select * from nope")';
      const failed = await rt.run(fn(bad), event());
      assert.equal(failed.kind, 'function');
      assert.match(failed.error ?? '', /UndefinedTable: relation "nope" does not exist/);
      assert.match(failed.error ?? '', /line 3: cur\.execute\("select \* from nope"\)/);
      // The same worker (maxWorkers 1) runs next: its transaction must be clean.
      const next = await rt.run(
        fn('cur = DB.cursor()\ncur.execute("select count(*) from test")\nprint(cur.fetchone()[0] > 0)'),
        event(),
      );
      assert.equal(next.ok, true, next.error);
      assert.equal(next.output, 'True\n');
      assert.deepEqual(await sql(url, 'SELECT * FROM test WHERE a = 101'), []);
    });

    test('a commit that fails at the end of a successful run fails the run', async () => {
      await sql(url, 'CREATE TABLE once (a int UNIQUE DEFERRABLE INITIALLY DEFERRED)');
      const result = await rt.run(fn('DB.cursor().execute("insert into once values (1), (1)")'), event());
      assert.equal(result.kind, 'function');
      assert.match(result.error ?? '', /^commit failed: .*UniqueViolation.* on run \[public\.test\]@$/s);
      assert.deepEqual(await sql(url, 'SELECT * FROM once'), []);
      assert.equal((await rt.run(fn('DB.cursor().execute("insert into once values (2)")'), event())).ok, true);
    });

    test('an error the code catches leaves no aborted transaction behind', async () => {
      const code = 'cur = DB.cursor()\ntry:\n    cur.execute("select 1/0")\nexcept Exception:\n    print("caught")';
      const caught = await rt.run(fn(code), event());
      assert.equal(caught.ok, true, caught.error);
      assert.match(
        caught.output,
        /^caught\n\[rppd: the transaction was in error at the end of the run and was rolled back\]\n$/,
      );
      const next = await rt.run(fn('cur = DB.cursor()\ncur.execute("select 7")\nprint(cur.fetchone()[0])'), event());
      assert.equal(next.output, '7\n');
    });

    test('a connection killed during the run is transient, and the worker reconnects', async () => {
      const pidCode = 'cur = DB.cursor()\ncur.execute("select pg_backend_pid()")\nprint(cur.fetchone()[0])';
      const before = await rt.run(fn(pidCode), event());
      const killed = await rt.run(fn('DB.cursor().execute("select pg_terminate_backend(pg_backend_pid())")'), event());
      assert.equal(killed.kind, 'transient', killed.error);
      assert.match(killed.error ?? '', /OperationalError/);
      const after = await rt.run(fn(pidCode), event());
      assert.equal(after.ok, true, after.error);
      assert.notEqual(after.output, before.output);
    });

    test('a server restart ends as transient or reconnects, and later runs succeed', async () => {
      // The worker is connected before the restart. (The test server runs with synchronous_commit off,
      // so rows committed just before an immediate restart may be lost: only rows after it are checked.)
      assert.equal((await rt.run(fn('DB.cursor().execute("select 1")'), event())).ok, true);
      await server.restart('immediate');
      const insert = fn('DB.cursor().execute("insert into test values (200, %s)", (str(EVENT_ID),))');
      const first = await rt.run(insert, event({ eventId: '1' }));
      assert.ok(first.ok || first.kind === 'transient', `unexpected ${first.kind}: ${first.error}`);
      if (!first.ok) {
        await waitFor(async () => (await rt.run(insert, event({ eventId: '1' }))).ok, { what: 'a run after restart' });
      }
      assert.equal((await rt.run(insert, event({ eventId: '2' }))).ok, true);
      const rows = await sql(url, 'SELECT b FROM test WHERE a = 200 ORDER BY b');
      assert.deepEqual(
        rows.map((r) => r.b),
        ['1', '2'],
      );
    });
  });
}

describe('Python runtime: what the code sees and returns', () => {
  let rt: Runtime;
  before(() => {
    rt = runtime(server.url, { outputLimitBytes: 64 * 1024 });
  });

  test('ID, PK, TABLE, TOPIC, TRIG, OP, KEY, NEW, OLD, EVENT_ID and __name__', async () => {
    const code = 'print(repr((ID, NAME, PK, TABLE, TOPIC, TRIG, OP, KEY, NEW, OLD, EVENT_ID, __name__)))';
    const input = event({
      eventId: '9007199254740993',
      table: 'shop.orders',
      topic: '.id',
      trig: 0,
      op: 'UPDATE',
      key: { id: 5, name: 'x' },
      pk: [5, 'x'],
      new: { id: 5, qty: 2 },
      old: { id: 5, qty: 1 },
    });
    const result = await rt.run(fn(code, { schemaTable: 'shop.orders', topic: '.id' }), input);
    assert.equal(result.ok, true, result.error);
    assert.equal(
      result.output,
      "(5, 'x', (5, 'x'), 'shop.orders', '.id', 0, 'UPDATE', {'id': 5, 'name': 'x'}, " +
        "{'id': 5, 'qty': 2}, {'id': 5, 'qty': 1}, 9007199254740993, '__rppd__')\n",
    );
    const deleted = await rt.run(
      fn('print(TRIG, OP, NEW, OLD)'),
      event({ trig: 2, op: 'DELETE', new: null, old: { a: 1 } }),
    );
    assert.equal(deleted.output, "2 DELETE None {'a': 1}\n");
  });

  test('defs see top-level imports and injected names; nothing leaks between runs', async () => {
    const code = 'import math\nleft = 1\ndef area():\n    return math.pi * ID ** 2\nprint(round(area(), 2))';
    const first = await rt.run(fn(code), event({ key: { id: 2 } }));
    assert.equal(first.ok, true, first.error);
    assert.equal(first.output, '12.57\n');
    const second = await rt.run(fn("print('left' in globals(), 'math' in globals(), 'area' in globals())"), event());
    assert.equal(second.output, 'False False False\n');
  });

  test('print and stderr are captured per run, also when the run fails', async () => {
    const code = 'import sys\nprint("one")\nprint("two", file=sys.stderr)\nraise ValueError("boom")';
    const result = await rt.run(fn(code), event());
    assert.equal(result.kind, 'function');
    assert.equal(result.output, 'one\ntwo\n');
    const next = await rt.run(fn('print("three")'), event());
    assert.equal(next.output, 'three\n');
  });

  test('multi-megabyte output is cut at the limit and breaks nothing, nor do raw writes to fd 1 and 2', async () => {
    const code = 'import os\nos.write(1, b"r" * 3_000_000)\nos.write(2, b"e" * 3_000_000)\nprint("a" * 5_000_000)';
    const result = await rt.run(fn(code), event());
    assert.equal(result.ok, true, result.error);
    assert.equal(result.output, `${'a'.repeat(64 * 1024)}\n[rppd: output truncated at 65536 bytes]\n`);
    const next = await rt.run(fn('print("still fine")'), event());
    assert.equal(next.output, 'still fine\n');
  });

  test('an exception names the type, the run and the line', async () => {
    const result = await rt.run(fn('x = 1\ny = x / 0\n', { topic: '.id' }), event());
    assert.equal(result.ok, false);
    assert.equal(result.kind, 'function');
    assert.equal(result.error, 'ZeroDivisionError: division by zero on run [public.test]@.id: line 2: y = x / 0');
    const nested = await rt.run(fn('def f():\n    return {}["k"]\n\nf()'), event());
    assert.match(nested.error ?? '', /^KeyError: 'k' on run \[public\.test\]@: line 2: return \{\}\["k"\]$/);
  });

  test('verbose_debug adds the code and the input', async () => {
    const code = 'raise RuntimeError("why")';
    const result = await rt.run(fn(code, { verboseDebug: true }), event({ key: { a: 77 } }));
    assert.equal(result.kind, 'function');
    assert.ok(result.error?.startsWith('RuntimeError: why on run [public.test]@: line 1:'), result.error);
    assert.ok(result.error?.includes(code));
    assert.ok(result.error?.includes('"key":{"a":77}'), result.error);
  });

  test('a syntax error fails as compile with its line', async () => {
    const result = await rt.run(fn('x = 1\nif x\n    print(x)'), event());
    assert.equal(result.kind, 'compile');
    assert.match(result.error ?? '', /^SyntaxError: .* on run \[public\.test\]@: line 2: if x$/);
  });

  test('code is compiled once per (id, codeHash)', async () => {
    const single = runtime(server.url, { maxWorkers: 1 });
    const v1 = fn('print("one")');
    assert.equal((await single.run(v1, event())).output, 'one\n');
    // Same id and hash: the compiled code is reused, whatever the text says.
    assert.equal((await single.run({ ...v1, code: 'print("two")' }, event())).output, 'one\n');
    const v2 = { ...v1, code: 'print("two")', codeHash: 'changed' };
    assert.equal((await single.run(v2, event())).output, 'two\n');
  });
});

describe('Python runtime: exits, timeouts and memory', () => {
  let rt: Runtime;
  const pidCode = 'import os\nprint(os.getpid())';
  before(() => {
    rt = runtime(server.url, { maxWorkers: 1, memoryLimitMb: 256 });
  });

  test('sys.exit(3) fails as exit and the worker keeps serving', async () => {
    const pid = (await rt.run(fn(pidCode), event())).output;
    const result = await rt.run(fn('import sys\nprint("bye")\nsys.exit(3)'), event());
    assert.equal(result.kind, 'exit');
    assert.equal(result.output, 'bye\n');
    assert.match(result.error ?? '', /^SystemExit\(3\) on run \[public\.test\]@: line 3: sys\.exit\(3\)$/);
    assert.equal((await rt.run(fn(pidCode), event())).output, pid);
  });

  test('os._exit(1) fails as exit with the stderr tail, and a new worker takes over', async () => {
    const pid = (await rt.run(fn(pidCode), event())).output;
    const result = await rt.run(fn('import os\nos.write(2, b"last words\\n")\nos._exit(1)'), event());
    assert.equal(result.kind, 'exit');
    assert.match(result.error ?? '', /exited with code 1 on run \[public\.test\]@.*stderr: last words/);
    const next = await rt.run(fn(pidCode), event());
    assert.equal(next.ok, true, next.error);
    assert.notEqual(next.output, pid);
  });

  test('an endless loop times out, the worker is replaced and the runtime keeps working', async () => {
    const result = await rt.run(fn('while True:\n    pass', { timeoutMs: 1500 }), event());
    assert.equal(result.kind, 'timeout');
    assert.match(result.error ?? '', /1500 ms/);
    assert.ok(result.tookMs >= 1000, `tookMs ${result.tookMs}`);
    const next = await rt.run(fn('print("alive")'), event());
    assert.equal(next.output, 'alive\n');
  });

  test('memory bombs fail as memory and the worker recovers', async () => {
    const big = await rt.run(fn("x = ' ' * (10**10)"), event());
    assert.equal(big.kind, 'memory', big.error);
    assert.match(big.error ?? '', /^MemoryError.* line 1: .*\(memory limit 256 MiB\)$/);
    const growing = await rt.run(fn('x = []\nwhile True:\n    x.append(" " * 10**6)'), event());
    assert.equal(growing.kind, 'memory', growing.error);
    const next = await rt.run(fn('print(len(" " * 10**7))'), event());
    assert.equal(next.output, '10000000\n');
  });
});

describe('Python runtime: the worker pool', () => {
  test('maxWorkers 3 runs six functions three at a time, in call order', async () => {
    const url = await server.createDatabase('py_pool');
    await sql(url, barrierTableDdl);
    const rt = runtime(url, { maxWorkers: 3 });
    const def = fn(groupBarrierCode(3));
    const results = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => rt.run(def, event({ key: { n }, pk: [n] }))));
    for (const result of results) assert.equal(result.ok, true, result.error);
    const rows = await sql<BarrierRow>(url, 'SELECT * FROM runs ORDER BY n');
    const times = (list: BarrierRow[], pick: (r: BarrierRow) => Date) =>
      list.map((r) => pick(r).getTime()).sort((a, b) => a - b);
    const [firstStarts, firstEnds] = [
      times(rows.slice(0, 3), (r) => r.started),
      times(rows.slice(0, 3), (r) => r.finished),
    ];
    const laterStarts = times(rows.slice(3), (r) => r.started);
    // Runs 1..3 ran at once; each of runs 4..6 started only after one more of them had finished.
    // Date has millisecond precision: a start and an end in the same millisecond compare equal.
    assert.ok(firstStarts[2]! <= firstEnds[0]!);
    for (const [i, start] of laterStarts.entries()) assert.ok(start >= firstEnds[i]!, `run ${i + 4} started early`);
    assert.deepEqual(rt.stats(), { workers: 3, busy: 0 });
  });

  test('setMaxWorkers grows the pool for waiting runs and shrinks it when idle', async () => {
    const url = await server.createDatabase('py_resize');
    await sql(url, barrierTableDdl);
    const rt = runtime(url, { maxWorkers: 1 });
    // Two runs that wait for each other: they can only finish once a second worker is allowed.
    const def = fn(groupBarrierCode(2));
    const both = Promise.all([1, 2].map((n) => rt.run(def, event({ key: { n } }))));
    await waitFor(async () => (await sql(url, 'SELECT 1 FROM runs')).length === 1, { what: 'the first run' });
    assert.deepEqual(rt.stats(), { workers: 1, busy: 1 });
    rt.setMaxWorkers(2);
    for (const result of await both) assert.equal(result.ok, true, result.error);
    assert.equal(rt.stats().workers, 2);
    rt.setMaxWorkers(1);
    await waitFor(() => rt.stats().workers === 1, { what: 'an idle worker to exit' });
  });

  test('close() ends a run in progress as internal, and later runs fail as internal', async () => {
    const rt = makePythonRuntime({
      dbUrl: server.url,
      maxWorkers: 1,
      outputLimitBytes: 1024,
      memoryLimitMb: 256,
      cacheDir: scratch,
    });
    const ready = await rt.run(fn('print(1)'), event());
    assert.equal(ready.ok, true, ready.error);
    const running = rt.run(fn('import time\nwhile True:\n    time.sleep(0.01)'), event());
    await waitFor(() => rt.stats().busy === 1, { what: 'the run to start' });
    await rt.close(100);
    const result = await running;
    assert.equal(result.kind, 'internal');
    assert.match(result.error ?? '', /closed/);
    assert.deepEqual(rt.stats(), { workers: 0, busy: 0 });
    assert.equal((await rt.run(fn('print(1)'), event())).kind, 'internal');
  });

  test('a worker that cannot start fails the run as internal with the reason', async () => {
    // Passes findPython's probe (-c) but cannot run the host script.
    const broken = interpreterWrapper(
      scratch,
      'python-broken',
      'if [ "$1" = "-c" ]; then exec /usr/bin/python3 "$@"; fi\necho "no host here" >&2\nexit 7',
    );
    const rt = runtime(server.url, { pythonPath: broken });
    const result = await rt.run(fn('print(1)'), event());
    assert.equal(result.kind, 'internal');
    assert.match(result.error ?? '', /exited with code 7 before it was ready; stderr: no host here/);
    assert.deepEqual(rt.stats(), { workers: 0, busy: 0 });
  });
});

describe('findPython', () => {
  test('skips a missing interpreter and prefers psycopg2', async (t) => {
    t.after(restoreEnv('RPPD_PYTHON', undefined));
    assert.deepEqual(await findPython('/nonexistent/python3'), { path: '/usr/bin/python3', driver: 'psycopg2' });
  });

  test('names what it tried, and how to install a driver, when nothing fits', async () => {
    const bare = interpreterWrapper(scratch, 'python-bare', 'exec /usr/bin/python3 -I -S "$@"');
    await assert.rejects(firstUsablePython(['/nonexistent/python3', bare]), (err: Error) => {
      assert.match(
        err.message,
        /tried \/nonexistent\/python3 \(not found\), .*python-bare \(cannot import psycopg2 or psycopg\)/,
      );
      assert.match(err.message, /apt-get install python3-psycopg2/);
      return true;
    });
  });

  test('falls back to psycopg 3 when psycopg2 cannot be imported', async () => {
    const path = psycopg3Only(scratch);
    assert.deepEqual(await findPython(path), { path, driver: 'psycopg' });
  });
});

/** Sets an environment variable for one test; returns the function that puts it back. */
function restoreEnv(name: string, value: string | undefined): () => void {
  const old = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  return () => {
    if (old === undefined) delete process.env[name];
    else process.env[name] = old;
  };
}

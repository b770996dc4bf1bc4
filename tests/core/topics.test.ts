// Topics and queues (spec §6 with the original's bugs fixed): '' per table,
// '.col' per column value (any type), named topics shared by tables; queue = true
// never overlaps and keeps commit order, queue = false runs in parallel.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture, waitForMaster, waitForRows } from '../support/fixture.ts';

// Each run records its start and end on the database clock.
const traceJs = (label: string, sleepMs: number) => `export default async (event, ctx) => {
  const key = JSON.stringify(event.key);
  const v = (event.new ?? event.old ?? {}).v ?? null;
  await ctx.db.query("INSERT INTO trace (label, k, v, phase, at) VALUES ($1, $2, $3, 'start', clock_timestamp())", ['${label}', key, v]);
  await new Promise((r) => setTimeout(r, ${sleepMs}));
  await ctx.db.query("INSERT INTO trace (label, k, v, phase, at) VALUES ($1, $2, $3, 'end', clock_timestamp())", ['${label}', key, v]);
};`;

// Parallel proof without timing: each run waits (up to 60 s) until two runs have started.
const barrierJs = `export default async (event, ctx) => {
  await ctx.db.query("INSERT INTO trace (label, k, v, phase, at) VALUES ('par', $1, $2, 'start', clock_timestamp())", [JSON.stringify(event.key), event.new.v]);
  for (let i = 0; i < 600; i++) {
    const { rows } = await ctx.db.query("SELECT count(*)::int AS n FROM trace WHERE label = 'par' AND phase = 'start'");
    if (rows[0].n >= 2) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await ctx.db.query("INSERT INTO trace (label, k, v, phase, at) VALUES ('par', $1, $2, 'end', clock_timestamp())", [JSON.stringify(event.key), event.new.v]);
};`;

interface TraceRow {
  label: string;
  k: string;
  v: string;
  phase: 'start' | 'end';
}

/** Max number of runs of `label` open at the same time, from the ordered trace. */
function maxOverlap(rows: TraceRow[], label: string): number {
  let open = 0;
  let max = 0;
  for (const r of rows.filter((x) => x.label === label)) {
    open += r.phase === 'start' ? 1 : -1;
    max = Math.max(max, open);
  }
  return max;
}

describe('topics and queues', () => {
  let f: Fixture;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE trace (id serial PRIMARY KEY, label text, k text, v text, phase text, at timestamptz);
      CREATE TABLE t_table (id serial PRIMARY KEY, v text);
      CREATE TABLE t_col (id serial PRIMARY KEY, grp text, v text);
      CREATE TABLE t_par (id serial PRIMARY KEY, v text);
      CREATE TABLE t_a (id serial PRIMARY KEY, v text);
      CREATE TABLE t_b (uid uuid PRIMARY KEY DEFAULT gen_random_uuid(), v text);
      CREATE TABLE t_other (id serial PRIMARY KEY, v text);
      CREATE TABLE t_multi (id serial PRIMARY KEY, v text);
    `);
    for (const t of ['t_table', 't_col', 't_par', 't_a', 't_b', 't_other', 't_multi']) {
      await f.db.query(
        `CREATE TRIGGER ${t}_event AFTER INSERT OR UPDATE OR DELETE ON ${t} FOR EACH ROW EXECUTE PROCEDURE rppd_event()`,
      );
    }
    const fns: [string, string, string, boolean, string, number][] = [
      ['public.t_table', '', traceJs('table', 30), true, 'js', 1],
      ['public.t_col', '.grp', traceJs('col', 30), true, 'js', 1],
      ['public.t_par', '', barrierJs, false, 'js', 1],
      ['public.t_a', 'shared', traceJs('named', 20), true, 'js', 1],
      ['public.t_b', 'shared', traceJs('named', 20), true, 'js', 1],
      ['public.t_other', '', traceJs('other', 0), true, 'js', 1],
      ['public.t_multi', '', traceJs('multi-p2-first-id', 0), true, 'js', 2],
      ['public.t_multi', '', traceJs('multi-p1', 0), true, 'js', 1],
      ['public.t_multi', '', traceJs('multi-p2-second-id', 0), true, 'js', 2],
    ];
    for (const [table, topic, code, queue, lang, priority] of fns) {
      await f.db.query(
        'INSERT INTO rppd_function (schema_table, topic, code, checksum, queue, lang, priority) VALUES ($1, $2, $3, $4, $5, $6, $7)',
        [table, topic, code, 'na', queue, lang, priority],
      );
    }
    await waitForMaster(await f.startNode());
  });
  after(async () => f?.close());

  async function trace(): Promise<TraceRow[]> {
    return f.query<TraceRow>('SELECT label, k, v, phase FROM trace ORDER BY at, id');
  }

  test("topic '' with queue = true: one at a time, in commit order", async () => {
    for (let i = 0; i < 15; i++) await f.db.query('INSERT INTO t_table (v) VALUES ($1)', [String(i)]);
    await waitForRows(f, `SELECT 1 FROM trace WHERE label = 'table' AND phase = 'end'`, 15);
    const rows = await trace();
    assert.equal(maxOverlap(rows, 'table'), 1);
    const order = rows.filter((r) => r.label === 'table' && r.phase === 'start').map((r) => Number(r.v));
    assert.deepEqual(order, [...Array(15).keys()]);
  });

  test("topic '.grp' (a text column): per value in order, values independent", async () => {
    // Interleaved commits over three groups.
    for (let i = 0; i < 18; i++) {
      await f.db.query('INSERT INTO t_col (grp, v) VALUES ($1, $2)', [`g${i % 3}`, String(i)]);
    }
    await waitForRows(f, `SELECT 1 FROM trace WHERE label = 'col' AND phase = 'end'`, 18);
    const rows = (await trace()).filter((r) => r.label === 'col');
    for (const g of ['g0', 'g1', 'g2']) {
      const mine = rows.filter((r) => JSON.parse(r.k).grp === g);
      assert.equal(maxOverlap(mine, 'col'), 1, `group ${g} never overlaps`);
      const order = mine.filter((r) => r.phase === 'start').map((r) => Number(r.v));
      assert.deepEqual(
        order,
        [...order].sort((a, b) => a - b),
        `group ${g} in commit order`,
      );
      assert.equal(order.length, 6);
    }
    // key carries the topic column and the primary key
    assert.deepEqual(Object.keys(JSON.parse(rows[0]!.k)).sort(), ['grp', 'id']);
  });

  test('queue = false: runs of one queue overlap', async () => {
    await f.db.query(`INSERT INTO t_par (v) SELECT g::text FROM generate_series(1, 4) g`);
    await waitForRows(f, `SELECT 1 FROM trace WHERE label = 'par' AND phase = 'end'`, 4);
    assert.ok(maxOverlap(await trace(), 'par') > 1, 'parallel runs overlapped');
  });

  test('a named topic is one queue shared by tables (uuid keys work too)', async () => {
    for (let i = 0; i < 10; i++) {
      await f.db.query(`INSERT INTO ${i % 2 ? 't_a' : 't_b'} (v) VALUES ($1)`, [String(i)]);
    }
    await waitForRows(f, `SELECT 1 FROM trace WHERE label = 'named' AND phase = 'end'`, 10);
    const rows = await trace();
    assert.equal(maxOverlap(rows, 'named'), 1);
    const order = rows.filter((r) => r.label === 'named' && r.phase === 'start').map((r) => Number(r.v));
    assert.deepEqual(order, [...Array(10).keys()]);
    assert.ok(rows.some((r) => r.label === 'named' && 'uid' in JSON.parse(r.k)));
  });

  test("'' topics never fire functions of other tables", async () => {
    await f.db.query(`INSERT INTO t_other (v) VALUES ('only other')`);
    await waitForRows(f, `SELECT 1 FROM trace WHERE label = 'other' AND phase = 'end'`, 1);
    const labels = new Set(
      (await f.query<TraceRow>(`SELECT label FROM trace WHERE v = 'only other'`)).map((r) => r.label),
    );
    assert.deepEqual([...labels], ['other']);
  });

  test('several functions on one event run in order of priority, then id', async () => {
    await f.db.query(`INSERT INTO t_multi (v) VALUES ('m')`);
    await waitForRows(f, `SELECT 1 FROM trace WHERE label LIKE 'multi%' AND phase = 'end'`, 3);
    const starts = (await trace()).filter((r) => r.label.startsWith('multi') && r.phase === 'start');
    assert.deepEqual(
      starts.map((r) => r.label),
      ['multi-p1', 'multi-p2-first-id', 'multi-p2-second-id'],
    );
  });
});

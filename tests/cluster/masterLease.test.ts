// A cluster of three node processes: one master without election, runs spread over
// every node by gRPC, and rppd_info describing all of them.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import type { RppdProcess } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';
import { feedUntil, startNodes, waitForMasterRow, waitForReady } from './clusterSupport.ts';

const names = ['n1', 'n2', 'n3'];

describe('cluster: one master, work on every node', () => {
  let f: Fixture;
  let nodes: Map<string, RppdProcess>;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE work (id serial PRIMARY KEY, v int);
      CREATE TABLE work_done (id serial PRIMARY KEY, work_id int, pid int);
      CREATE TRIGGER work_event AFTER INSERT ON work FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang, queue, fn_logging)
       VALUES ($1, 'na', 'work', 'js', false, true)`,
      [
        `export default async (e, ctx) => {
           await new Promise((r) => setTimeout(r, 200));
           await ctx.db.query('INSERT INTO work_done (work_id, pid) VALUES ($1, $2)', [e.new.id, process.pid]);
         };`,
      ],
    );
  });
  after(async () => f?.close());

  test('three nodes starting at once: exactly one becomes master', async () => {
    nodes = await startNodes(f, names);
    await waitForReady(f, names);
    const master = await waitForMasterRow(f);
    const flagged = await f.query<{ host_name: string }>('SELECT host_name FROM rppd_config WHERE master');
    assert.deepEqual(
      flagged.map((r) => r.host_name),
      [master.host_name],
    );
    const acquired = [...nodes].filter(([, p]) => p.lines.some((l) => l.msg === 'master: lease acquired'));
    assert.deepEqual(
      acquired.map(([name]) => name),
      [master.host_name],
    );
    const withEpoch = await f.query('SELECT 1 FROM rppd_config WHERE epoch IS NOT NULL');
    assert.equal(withEpoch.length, 1, 'only the winner took an epoch');
  });

  test('runs go to every node, and the log names the node that ran each one', async () => {
    await f.db.query('UPDATE rppd_config SET max_db_connections = 2');
    const loggedBy = async () =>
      (
        await f.query<{ node_id: number }>(
          'SELECT DISTINCT node_id FROM rppd_function_log WHERE error_msg IS NULL ORDER BY node_id',
        )
      ).map((r) => r.node_id);
    await feedUntil(
      () => f.db.query('INSERT INTO work (v) SELECT g FROM generate_series(1, 6) g'),
      async () => (await loggedBy()).length === 3,
      'log rows from all three nodes',
    );
    const inserted = (await f.query('SELECT 1 FROM work')).length;
    await waitFor(async () => (await f.query('SELECT DISTINCT work_id FROM work_done')).length >= inserted, {
      timeoutMs: 90_000,
      what: `${inserted} runs done`,
    });
    const ids = (await f.query<{ id: number }>('SELECT id FROM rppd_config ORDER BY id')).map((r) => r.id);
    assert.deepEqual(await loggedBy(), ids);
    const pids = await f.query<{ pid: number; n: string }>('SELECT pid, count(*) AS n FROM work_done GROUP BY pid');
    const nodePids = [...nodes.values()].map((p) => p.proc.pid);
    assert.equal(pids.length, 3, 'three processes ran functions');
    for (const row of pids) assert.ok(nodePids.includes(row.pid), `pid ${row.pid} is one of the nodes`);
    const done = await f.query('SELECT DISTINCT work_id FROM work_done');
    assert.equal(done.length, inserted, 'every event ran');
  });

  test('rppd_info() returns valid JSON about every node', async () => {
    const [{ info }] = (await f.query<{ info: string }>('SELECT rppd_info() AS info')) as [{ info: string }];
    const parsed = JSON.parse(info) as {
      node_id: number;
      is_master: boolean;
      nodes: { node_id: number; host_name: string; is_master: boolean; heartbeat_age_ms: number; pool: number }[];
    };
    assert.equal(parsed.is_master, true, 'rppd_info() without a node describes the master');
    assert.deepEqual(parsed.nodes.map((n) => n.host_name).sort(), names);
    assert.equal(parsed.nodes.filter((n) => n.is_master).length, 1);
    for (const n of parsed.nodes) {
      assert.equal(typeof n.heartbeat_age_ms, 'number');
      const [{ one }] = (await f.query<{ one: string }>('SELECT rppd_info($1::int) AS one', [n.node_id])) as [
        { one: string },
      ];
      const single = JSON.parse(one) as { node_id: number; is_master: boolean; pool: number; in_proc: number };
      assert.equal(single.node_id, n.node_id);
      assert.equal(single.is_master, n.is_master);
    }
    // Each node publishes its own pool: max_db_connections (2) minus what runs there.
    await waitFor(
      async () => {
        const now = JSON.parse(
          ((await f.query<{ info: string }>('SELECT rppd_info() AS info'))[0] as { info: string }).info,
        ) as { nodes: { pool: number; in_proc: number }[] };
        return now.nodes.every((n) => n.pool + n.in_proc === 2);
      },
      { what: 'every node reporting pool + in_proc = 2' },
    );
  });
});

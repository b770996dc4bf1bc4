// spread_cpu_idle: the master gives another node runs it could keep only while that node's
// host has CPU to spare; every node publishes its host's idle CPU with its heartbeat.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture, waitForMaster } from '../support/fixture.ts';
import { waitFor } from '../support/waitFor.ts';

describe('cluster: spreading runs needs spare CPU on the other host', () => {
  let f: Fixture;
  let masterId: number;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE cpu_work (id serial PRIMARY KEY);
      CREATE TRIGGER cpu_work_event AFTER INSERT ON cpu_work FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang, queue, fn_logging)
       VALUES ($1, 'na', 'cpu_work', 'js', false, true)`,
      ['export default async () => { await new Promise((r) => setTimeout(r, 200)); };'],
    );
    // No host is ever more than 100 % idle: this master keeps every run.
    await waitForMaster(await f.startNode({ name: 'keeper', env: { RPPD_SPREAD_CPU_IDLE: '100' } }));
    await f.startNode({ name: 'other' });
    masterId = (await f.query<{ id: number }>('SELECT id FROM rppd_config WHERE master'))[0]!.id;
    await f.db.query('UPDATE rppd_config SET max_db_connections = 2');
  });
  after(async () => f?.close());

  test('every node publishes the idle share of its host CPU', async () => {
    const rows = await waitFor(
      async () => {
        const r = await f.query<{ cpu_idle: number | null }>(
          "SELECT (stats->>'cpu_idle')::float8 AS cpu_idle FROM rppd_config ORDER BY id",
        );
        return r.length === 2 && r.every((x) => x.cpu_idle !== null) ? r : undefined;
      },
      { what: 'cpu_idle in the stats of both nodes' },
    );
    for (const r of rows) assert.ok(r.cpu_idle! >= 0 && r.cpu_idle! <= 1, `cpu_idle ${r.cpu_idle}`);
  });

  test('with no spare CPU elsewhere, the master runs everything itself, one slot after another', async () => {
    // The other node must be ready (published stats) so that only the CPU check keeps runs away.
    await waitFor(
      async () =>
        (await f.query("SELECT 1 FROM rppd_config WHERE stats ? 'incarnation' AND heartbeat_at IS NOT NULL")).length ===
          2 || undefined,
      { what: 'both nodes ready' },
    );
    await f.db.query('INSERT INTO cpu_work SELECT FROM generate_series(1, 8)');
    const ran = await waitFor(
      async () => {
        const r = await f.query<{ node_id: number }>('SELECT node_id FROM rppd_function_log WHERE error_msg IS NULL');
        return r.length >= 8 ? r : undefined;
      },
      { timeoutMs: 90_000, what: '8 runs logged' },
    );
    assert.deepEqual(new Set(ran.map((r) => r.node_id)), new Set([masterId]));
  });
});

// The node's HTTP API over real HTTP: health, info, Prometheus metrics, error shape.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture, waitForMaster } from '../support/fixture.ts';
import { freePort } from '../support/pgServer.ts';
import { waitFor } from '../support/waitFor.ts';

describe('HTTP API', () => {
  let f: Fixture;
  let base: string;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE h (id serial PRIMARY KEY);
      CREATE TRIGGER h_event AFTER INSERT ON h FOR EACH ROW EXECUTE PROCEDURE rppd_event();
      INSERT INTO rppd_function (code, checksum, schema_table, lang) VALUES
        ('export default async () => {}', 'na', 'h', 'js'),
        ('export default async () => { throw new Error("x") }', 'na', 'h', 'js');`);
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await waitForMaster(await f.startNode({ env: { RPPD_HTTP: `127.0.0.1:${port}` } }));
  });
  after(async () => f?.close());

  test('/healthz reports ok with the node and its role', async () => {
    const res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { status: string; master: boolean };
    assert.equal(body.status, 'ok');
    assert.equal(body.master, true);
  });

  test('/metrics counts runs by result', async () => {
    await f.db.query('INSERT INTO h DEFAULT VALUES');
    const text = await waitFor(
      async () => {
        const t = await (await fetch(`${base}/metrics`)).text();
        // Also counts the events of rppd_config (this node registering), which no function wants.
        const done = /rppd_events_completed_total [1-9]/.test(t);
        return done && /rppd_runs_total\{fn_id="1",result="ok"\} 1/.test(t) && /result="function"\} 1/.test(t)
          ? t
          : undefined;
      },
      { what: 'run counters' },
    );
    assert.match(text, /rppd_is_master 1/);
    // One event at a time: writers NOTIFY (wakeMode.ts).
    assert.match(text, /rppd_writers_notify 1/);
    assert.match(text, /rppd_wake_mode_changes_total\{mode="notify",why="start"\} 1/);
    // The process (worker threads' CPU included) and the main thread's event-loop delay and GC pauses.
    const cpu = Number(/^process_cpu_seconds_total (\S+)$/m.exec(text)?.[1]);
    assert.ok(cpu > 0, `process_cpu_seconds_total ${cpu}`);
    assert.match(text, /^nodejs_eventloop_lag_max_seconds \d/m);
    assert.match(text, /^process_resident_memory_bytes [1-9]/m);
    assert.match(text, /^# TYPE nodejs_gc_duration_seconds histogram$/m);
  });

  test('unknown routes and methods use the one error shape', async () => {
    const res = await fetch(`${base}/nope`);
    assert.equal(res.status, 404);
    const body = (await res.json()) as { error: Record<string, string> };
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message']);
    const post = await fetch(`${base}/healthz`, { method: 'POST' });
    assert.equal(post.status, 405);
  });
});

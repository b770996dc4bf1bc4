// Nodes that are not master come and go: a worker SIGKILLed mid-run, one that stops
// answering without closing its connections (SIGSTOP), and one that joins.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import type { RppdProcess } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';
import { OrderedWorkload, startNodes, waitForMasterRow, waitForReady } from './clusterSupport.ts';

const names = ['w1', 'w2', 'w3'];

describe('cluster: losing and gaining nodes', () => {
  let f: Fixture;
  let nodes: Map<string, RppdProcess>;
  let work: OrderedWorkload;
  before(async () => {
    f = await setupFixture();
    work = await OrderedWorkload.create(f, { keys: 8, sleepMs: 400 });
    nodes = await startNodes(f, names);
    await waitForReady(f, names);
    await f.db.query('UPDATE rppd_config SET max_db_connections = 2');
  });
  after(async () => f?.close());

  /** A node other than the master with a run started and not finished; its pid and the event. */
  async function runInFlightOnWorker(): Promise<{ name: string; evId: number }> {
    const master = await waitForMasterRow(f);
    const workers = names.filter((n) => n !== master.host_name && nodes.get(n)!.proc.exitCode === null);
    const pids = workers.map((n) => nodes.get(n)!.proc.pid);
    const row = await waitFor(
      async () => {
        const [r] = await f.query<{ ev_id: number; pid: number }>(
          `SELECT s.ev_id, s.pid FROM ev_started s
            WHERE s.pid = ANY($1) AND NOT EXISTS (SELECT 1 FROM ev_done d WHERE d.ev_id = s.ev_id)
            ORDER BY s.id DESC LIMIT 1`,
          [pids],
        );
        return r;
      },
      { what: 'a run in flight on a worker' },
    );
    return { name: workers[pids.indexOf(row.pid)]!, evId: row.ev_id };
  }

  async function waitDoneElsewhere(evId: number, pid: number): Promise<void> {
    await waitFor(
      async () => (await f.query('SELECT 1 FROM ev_done WHERE ev_id = $1 AND pid <> $2', [evId, pid])).length > 0,
      { timeoutMs: 60_000, what: `event ${evId} run again on another node` },
    );
  }

  test('SIGKILL of a worker: its runs are dispatched again; nothing lost, order kept', async () => {
    await work.insert(40);
    const { name, evId } = await runInFlightOnWorker();
    const victim = nodes.get(name)!;
    const killedAt = performance.now();
    await victim.kill('SIGKILL');
    await waitDoneElsewhere(evId, victim.proc.pid!);
    console.log(
      `SIGKILL worker: its run of event ${evId} done elsewhere ${Math.round(performance.now() - killedAt)} ms later`,
    );
    await work.waitAllDone();
    const result = await work.check();
    assert.equal(result.missing, 0, 'every event ran');
    assert.equal(result.outOfOrder, 0, 'every key kept its order');
    nodes.set(name, await f.startNode({ name }));
    await waitForReady(f, [name]);
  });

  test('a worker that stops answering without closing its connections (SIGSTOP): its runs are dispatched again', async () => {
    await work.insert(40);
    const { name, evId } = await runInFlightOnWorker();
    const victim = nodes.get(name)!;
    const stoppedAt = performance.now();
    victim.proc.kill('SIGSTOP');
    try {
      await waitDoneElsewhere(evId, victim.proc.pid!);
      console.log(
        `SIGSTOP worker: its run of event ${evId} done elsewhere ${Math.round(performance.now() - stoppedAt)} ms later`,
      );
      await work.waitAllDone();
    } finally {
      await victim.kill('SIGKILL');
    }
    const result = await work.check();
    assert.equal(result.missing, 0, 'every event ran');
    assert.equal(result.outOfOrder, 0, 'every key kept its order');
    nodes.set(name, await f.startNode({ name }));
    await waitForReady(f, [name]);
  });

  test('a node that joins gets work', async () => {
    // Keep the cluster busy while the new node starts.
    let feeding = true;
    const feeder = (async () => {
      while (feeding) {
        await work.insert(4);
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    try {
      const joiner = await f.startNode({ name: 'w4' });
      nodes.set('w4', joiner);
      await waitForReady(f, ['w4']);
      const readyAt = performance.now();
      await waitFor(
        async () => (await f.query('SELECT 1 FROM ev_started WHERE pid = $1', [joiner.proc.pid])).length > 0,
        { what: 'a run on the node that joined' },
      );
      console.log(
        `join: first run started on the new node (JS runtime cold start included) ${Math.round(performance.now() - readyAt)} ms after it was ready`,
      );
    } finally {
      feeding = false;
      await feeder;
    }
    await work.waitAllDone();
    const result = await work.check();
    assert.equal(result.missing, 0);
    assert.equal(result.outOfOrder, 0);
  });

  test('SIGTERM of a worker: its runs finish and count, nothing runs twice, the rest goes elsewhere', async () => {
    const before = await work.check();
    const leaving = nodes.get('w4')!;
    await work.insert(40);
    await waitFor(
      async () => {
        const rows = await f.query(
          `SELECT 1 FROM ev_started s WHERE s.pid = $1 AND NOT EXISTS (SELECT 1 FROM ev_done d WHERE d.ev_id = s.ev_id)`,
          [leaving.proc.pid],
        );
        return rows.length > 0;
      },
      { what: 'a run in flight on w4' },
    );
    await leaving.kill('SIGTERM');
    assert.equal((await leaving.exited).code, 0);
    await work.waitAllDone();
    const result = await work.check();
    assert.equal(result.missing, 0);
    assert.equal(result.outOfOrder, 0);
    assert.equal(result.duplicates, before.duplicates, 'a node that stops cleanly finishes what it started');
  });
});

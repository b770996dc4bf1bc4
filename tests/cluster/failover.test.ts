// The master goes away: SIGKILL (its lease runs out, another node takes over) and
// SIGTERM (it finishes its runs and hands over at once). Measured times are printed;
// the assertions are about what happened, never how fast.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import type { RppdProcess } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';
import { feedUntil, logDelay, OrderedWorkload, startNodes, waitForMasterRow, waitForReady } from './clusterSupport.ts';

const names = ['a', 'b', 'c'];

describe('cluster failover', () => {
  let f: Fixture;
  let nodes: Map<string, RppdProcess>;
  let work: OrderedWorkload;
  before(async () => {
    f = await setupFixture();
    work = await OrderedWorkload.create(f, { keys: 10, sleepMs: 20 });
    nodes = await startNodes(f, names);
    await waitForReady(f, names);
  });
  after(async () => f?.close());

  test('SIGKILL of the master: another node takes over and dispatches; nothing lost, order kept', async () => {
    const old = await waitForMasterRow(f);
    await work.insert(300);
    await waitFor(async () => (await f.query('SELECT 1 FROM ev_done')).length >= 50, { what: 'runs under way' });

    const killedAt = Date.now();
    await nodes.get(old.host_name)!.kill('SIGKILL');
    await work.insert(50);

    const next = await waitForMasterRow(f, old.epoch);
    assert.notEqual(next.host_name, old.host_name);
    const proc = nodes.get(next.host_name)!;
    const acquired = await proc.waitForLog((l) => l.msg === 'master: lease acquired');
    const dispatching = await proc.waitForLog((l) => l.msg === 'master: dispatching');
    const firstRun = await proc.waitForLog((l) => l.msg === 'run finished' && logDelay(l, killedAt) > 0);
    console.log(
      `SIGKILL master: lease taken after ${logDelay(acquired, killedAt)} ms, dispatching after ` +
        `${logDelay(dispatching, killedAt)} ms, first run finished after ${logDelay(firstRun, killedAt)} ms`,
    );

    await work.waitAllDone();
    const result = await work.check();
    console.log(`SIGKILL master: ${work.inserted} events, ${result.duplicates} ran twice`);
    assert.equal(result.missing, 0, 'every event ran');
    assert.equal(result.outOfOrder, 0, 'every key kept its order');
  });

  test('the killed node starts again under its name and gets work as a node', async () => {
    const master = await waitForMasterRow(f);
    const victim = names.find((n) => nodes.get(n)!.proc.exitCode !== null || nodes.get(n)!.proc.signalCode !== null)!;
    const again = await f.startNode({ name: victim });
    nodes.set(victim, again);
    await waitForReady(f, [victim]);
    assert.equal((await waitForMasterRow(f)).host_name, master.host_name, 'a returning node does not take over');
    await feedUntil(
      () => work.insert(10),
      async () => (await f.query('SELECT 1 FROM ev_done WHERE pid = $1', [again.proc.pid])).length > 0,
      `a run on the restarted ${victim}`,
    );
    await work.waitAllDone();
    assert.equal((await work.check()).missing, 0);
  });

  test('SIGTERM of the master: its runs finish and are written, another node takes over at once', async () => {
    const old = await waitForMasterRow(f);
    const before = await work.check();
    await work.insert(300);
    await waitFor(async () => (await f.query('SELECT 1 FROM ev_done')).length >= work.inserted - 250, {
      what: 'runs under way',
    });

    const termAt = Date.now();
    const leaving = nodes.get(old.host_name)!;
    await leaving.kill('SIGTERM');
    await work.insert(20);
    const exit = await leaving.exited;
    assert.equal(exit.code, 0, 'the old master stopped cleanly');

    const next = await waitForMasterRow(f, old.epoch);
    const proc = nodes.get(next.host_name)!;
    const acquired = await proc.waitForLog((l) => l.msg === 'master: lease acquired' && logDelay(l, termAt) > 0);
    const dispatching = await proc.waitForLog((l) => l.msg === 'master: dispatching' && logDelay(l, termAt) > 0);
    const released = leaving.lines.find((l) => l.msg === 'stopped');
    console.log(
      `SIGTERM master: old master stopped after ${released ? logDelay(released, termAt) : '?'} ms, lease taken after ` +
        `${logDelay(acquired, termAt)} ms, dispatching after ${logDelay(dispatching, termAt)} ms`,
    );

    await work.waitAllDone();
    const result = await work.check();
    assert.equal(result.missing, 0, 'every event ran');
    assert.equal(result.outOfOrder, 0, 'every key kept its order');
    assert.equal(result.duplicates, before.duplicates, 'a clean hand-over runs nothing twice');
  });
});

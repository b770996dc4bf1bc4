// The short form of `npm run chaos`: 2,000 events over 50 ordered keys plus unordered
// ones, one SIGKILL of the master and one immediate PostgreSQL restart while they flow.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatReport, runChaos } from './chaosRun.ts';

test('chaos: master SIGKILL and PostgreSQL crash restart under load lose nothing and keep order', async () => {
  const report = await runChaos({
    orderedKeys: 50,
    orderedEvents: 1_600,
    freeEvents: 400,
    ratePerSec: 150,
    actions: ['kill-master', 'restart-pg'],
    maxDbConnections: 4,
    timeoutMs: 150_000,
    log: (line) => console.log(line),
  });
  console.log(formatReport(report));
  assert.equal(report.events, 2_000);
  assert.equal(report.lost, 0, 'every source row has its sink row');
  assert.equal(report.orderViolations, 0, 'no ordered run before its predecessor');
  assert.equal(report.overlaps, 0, 'no two runs of one ordered key at once');
  assert.equal(report.failedRuns, 0, 'no run recorded as failed');
  assert.equal(report.crashes, 0, 'no node process died on its own');
  assert.deepEqual(
    report.actions.map((a) => a.action),
    ['kill-master', 'restart-pg'],
  );
});

// The host CPU reading nodes publish (cpu_idle) and the master judges its own machine by.
import assert from 'node:assert/strict';
import { cpus } from 'node:os';
import { test } from 'node:test';
import { makeHostCpuIdle, parseProcStat } from '../../src/cluster/hostCpu.ts';

test('the first line of /proc/stat: iowait counts as idle, guest time is not added again', () => {
  assert.deepEqual(parseProcStat('cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 3 0\n'), {
    idle: 840,
    total: 1000,
  });
  assert.equal(parseProcStat('intr 12345\n'), null);
});

test('a reading after a busy spell is a share between 0 and 1 that saw this process work', () => {
  const idle = makeHostCpuIdle();
  const until = Date.now() + 300;
  while (Date.now() < until) Math.sqrt(Math.random());
  const share = idle();
  assert.ok(share !== null && share >= 0 && share <= 1, String(share));
  // This process kept one of the cores busy (at least half of it, even if the machine is loaded).
  const most = 1 - 0.5 / cpus().length;
  assert.ok(share! <= most, `busy for 300 ms on one of ${cpus().length} cores, yet ${share} idle`);
});

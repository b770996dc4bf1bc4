// Pure logic of the wake mode: writers NOTIFY while events arrive slowly, the master polls
// while they arrive fast, with a band between the two rates so the mode does not flap.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WakeMode } from '../../src/dispatch/wakeMode.ts';

const opts = { notifyBelow: 500, pollAbove: 1000, busyShare: 0.5 };

test('starts in notify mode and stays there at a slow rate', () => {
  const m = new WakeMode(opts);
  // 300 events/s for 3 s, read every 10 ms.
  for (let t = 0; t < 3000; t += 10) {
    m.note(t, 3, false);
    assert.equal(m.decide(t), 'notify', `at ${t} ms`);
  }
});

test('a fast rate switches to polling within the recent window; slowing down switches back', () => {
  const m = new WakeMode(opts);
  let t = 0;
  // 2,000 events/s: 20 per 10 ms.
  for (; t < 300; t += 10) m.note(t, 20, false);
  assert.equal(m.decide(t), 'poll');
  // In the band (700/s): stays polling.
  for (; t < 3000; t += 10) {
    m.note(t, 7, false);
    assert.equal(m.decide(t), 'poll', `in the band at ${t} ms`);
  }
  // 100/s: back to notify once the last second is below 500/s.
  let switchedAt = -1;
  for (; t < 5000; t += 10) {
    m.note(t, 1, false);
    if (m.decide(t) === 'notify') {
      switchedAt = t;
      break;
    }
  }
  assert.ok(switchedAt > 3000 && switchedAt <= 4100, `switched back at ${switchedAt} ms`);
});

test('a burst from idle polls for at least a second: the slow second before it does not switch back', () => {
  const m = new WakeMode(opts);
  for (let t = 0; t < 5000; t += 10) m.note(t, 1, false);
  let t = run(m, 5000, 6000, 15, () => false);
  assert.ok(t > 5000 && t < 5300, `polling from ${t} ms`);
  const polledAt = t;
  for (t += 10; t < polledAt + 1000; t += 10) {
    m.note(t, 15, false);
    assert.equal(m.decide(t), 'poll', `${t - polledAt} ms after the switch`);
  }
});

test('a backlog (a full read, or no room to read) polls whatever the count', () => {
  const m = new WakeMode(opts);
  m.note(0, 0, true);
  assert.equal(m.decide(1), 'poll');
  // The backlog is over: polling holds while the last second is busy, then notify.
  for (let t = 10; t < 1500; t += 10) m.note(t, 0, false);
  assert.equal(m.decide(1500), 'notify');
});

test('idle time long past clears the rate', () => {
  const m = new WakeMode(opts);
  for (let t = 0; t < 500; t += 10) m.note(t, 50, false);
  assert.equal(m.decide(500), 'poll');
  // Nothing read for a minute: the old counts are gone.
  assert.equal(m.decide(60_500), 'notify');
  m.note(60_510, 1, false);
  assert.equal(m.decide(60_510), 'notify');
});

/** Events at `perTenMs` per 10 ms from `from` to `to`, the lock sampled as `busy` says; the time of the first poll. */
function run(m: WakeMode, from: number, to: number, perTenMs: number, busy: (t: number) => boolean): number {
  for (let t = from; t < to; t += 10) {
    m.note(t, perTenMs, false);
    if (m.wantsSample(t)) m.noteLock(t, busy(t));
    if (m.decide(t) === 'poll') return t;
  }
  return -1;
}

test('a NOTIFY lock busy half the time switches to polling at a rate the lock capped', () => {
  const m = new WakeMode(opts);
  let t = 0;
  // 400 events/s with the lock found free: notify stays, and the lock is sampled every 100 ms
  // while events arrive.
  let sampled = 0;
  for (; t < 2000; t += 10) {
    m.note(t, 4, false);
    if (m.wantsSample(t)) {
      sampled++;
      m.noteLock(t, false);
    }
    assert.equal(m.decide(t), 'notify');
  }
  assert.ok(sampled >= 15 && sampled <= 21, `sampled ${sampled} times in 2 s`);
  // Now every sample finds it busy: half of the last two seconds' samples within ~1 s.
  t = run(m, t, 4000, 4, () => true);
  assert.ok(t > 2500 && t < 3300, `polling from ${t} ms`);
  assert.equal(m.reason, 'contended');
  assert.equal(m.wantsSample(t + 200), false, 'no samples while polling');
  // At 150/s, below half the rate at which the lock was busy (200/s): back to notify.
  for (t += 10; t < 6000; t += 10) {
    m.note(t, 1.5, false);
    if (m.decide(t) === 'notify') break;
  }
  assert.ok(t < 5000, `back to notify at ${t} ms`);
  assert.equal(m.reason, 'slow');
});

test('a lock busy in a few samples only (a disk stall queues every writer at once) does not switch', () => {
  const m = new WakeMode(opts);
  // 566 events/s for 30 s; one sample in ten finds the lock busy.
  assert.equal(
    run(m, 0, 30_000, 5.66, (t) => t % 1000 < 100),
    -1,
  );
});

test('polling at the rate the lock was busy tries NOTIFY again after 5 s, then waits twice as long', () => {
  const m = new WakeMode(opts);
  let t = run(m, 0, 5000, 4, () => true);
  assert.equal(m.reason, 'contended');
  const polledAt = t;
  // The same 400/s: still polling 4.9 s later, notify again by 5.1 s.
  for (t += 10; m.decide(t) === 'poll' && t < polledAt + 20_000; t += 10) m.note(t, 4, false);
  assert.ok(t >= polledAt + 4900 && t <= polledAt + 5100, `retried ${t - polledAt} ms after`);
  assert.equal(m.reason, 'retry');
  // Busy again: polling, and the next retry comes 10 s later.
  const again = run(m, t, t + 5000, 4, () => true);
  assert.ok(again > 0, 'busy again');
  for (t = again + 10; m.decide(t) === 'poll' && t < again + 30_000; t += 10) m.note(t, 4, false);
  assert.ok(t >= again + 9900 && t <= again + 10_100, `second retry ${t - again} ms after`);
  // This time the lock stays free: notify holds, and a later busy lock starts the back-off over at 5 s.
  assert.equal(
    run(m, t, t + 15_000, 4, () => false),
    -1,
  );
  const third = run(m, t + 15_000, t + 20_000, 4, () => true);
  for (t = third + 10; m.decide(t) === 'poll' && t < third + 30_000; t += 10) m.note(t, 4, false);
  assert.ok(t <= third + 5100, `retry ${t - third} ms after a kept retry`);
});

test('no retry while events arrive above notifyBelow', () => {
  const m = new WakeMode(opts);
  const polledAt = run(m, 0, 5000, 7, () => true);
  assert.ok(polledAt > 0);
  for (let t = polledAt + 10; t < polledAt + 20_000; t += 10) {
    m.note(t, 7, false);
    assert.equal(m.decide(t), 'poll', `700/s at ${t} ms`);
  }
});

test('no samples while nothing arrives; old samples do not count later', () => {
  const m = new WakeMode(opts);
  assert.equal(m.wantsSample(0), false);
  m.note(10, 1, false);
  assert.equal(m.wantsSample(10), true);
  for (let t = 10; t < 1000; t += 100) {
    m.note(t, 1, false);
    m.noteLock(t, true);
  }
  // A pause of a minute, then samples that find the lock free: the busy ones are dropped.
  for (let t = 60_000; t < 61_000; t += 100) {
    m.note(t, 1, false);
    m.noteLock(t, false);
  }
  assert.equal(m.decide(61_000), 'notify');
});

test('rejects thresholds that would flap', () => {
  assert.throws(() => new WakeMode({ notifyBelow: 1000, pollAbove: 500, busyShare: 0.5 }), /notifyBelow ≤ pollAbove/);
  assert.throws(() => new WakeMode({ notifyBelow: 0, pollAbove: 500, busyShare: 0.5 }), /0 < notifyBelow/);
  assert.throws(() => new WakeMode({ notifyBelow: 500, pollAbove: 1000, busyShare: 1.5 }), /busyShare ≤ 1/);
});

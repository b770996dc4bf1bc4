// Pure logic of the wake mode: writers NOTIFY while events arrive slowly, the master polls
// while they arrive fast, with a band between the two rates so the mode does not flap.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WakeMode } from '../../src/dispatch/wakeMode.ts';

const opts = { notifyBelow: 500, pollAbove: 1000, waitersAbove: 0.5 };

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

test('writers queueing for the NOTIFY lock switch to polling at a rate the lock capped', () => {
  const m = new WakeMode(opts);
  let t = 0;
  // 700 events/s, all the writers get through the lock: below pollAbove, so notify stays,
  // and the lock is sampled every 100 ms while events arrive.
  let sampled = 0;
  for (; t < 2000; t += 10) {
    m.note(t, 7, false);
    if (m.wantsSample(t)) {
      sampled++;
      m.noteWaiters(t, 0);
    }
    assert.equal(m.decide(t), 'notify');
  }
  assert.ok(sampled >= 15 && sampled <= 21, `sampled ${sampled} times in 2 s`);
  // Now they queue: on average one writer waits.
  for (; t < 3000; t += 10) {
    m.note(t, 7, false);
    if (m.wantsSample(t)) m.noteWaiters(t, 1);
    if (m.decide(t) === 'poll') break;
  }
  assert.ok(t < 2500, `polling from ${t} ms`);
  assert.equal(m.wantsSample(t + 200), false, 'no samples while polling');
  // The same 700/s while polling: stays (writers would queue again).
  for (t += 10; t < 6000; t += 10) {
    m.note(t, 7, false);
    assert.equal(m.decide(t), 'poll', `at ${t} ms`);
  }
  // Back to notify only below half the rate at which they queued (350/s), not at notifyBelow (500/s).
  for (; t < 8000; t += 10) {
    m.note(t, 4, false);
    assert.equal(m.decide(t), 'poll', `400/s at ${t} ms`);
  }
  for (; t < 10_000; t += 10) {
    m.note(t, 2, false);
    if (m.decide(t) === 'notify') break;
  }
  assert.ok(t < 10_000, 'back to notify at 200/s');
});

test('no samples while nothing arrives; old samples do not count later', () => {
  const m = new WakeMode(opts);
  assert.equal(m.wantsSample(0), false);
  m.note(10, 1, false);
  assert.equal(m.wantsSample(10), true);
  m.noteWaiters(10, 5);
  m.note(110, 1, false);
  m.noteWaiters(110, 5);
  // A pause of a minute, then one sample with no waiters: the old two are dropped.
  m.note(60_000, 1, false);
  m.noteWaiters(60_000, 0);
  m.note(60_100, 1, false);
  m.noteWaiters(60_100, 0);
  m.note(60_200, 1, false);
  m.noteWaiters(60_200, 0);
  assert.equal(m.decide(60_200), 'notify');
});

test('rejects thresholds that would flap', () => {
  assert.throws(
    () => new WakeMode({ notifyBelow: 1000, pollAbove: 500, waitersAbove: 0.5 }),
    /notifyBelow ≤ pollAbove/,
  );
  assert.throws(() => new WakeMode({ notifyBelow: 0, pollAbove: 500, waitersAbove: 0.5 }), /0 < notifyBelow/);
});

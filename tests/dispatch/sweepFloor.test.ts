// Pure logic of the sweep's floor: it moves to an earlier sweep's cursor only once a later
// snapshot shows every transaction older than that sweep's own transaction id ended.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeSweepFloor } from '../../src/dispatch/sweepFloor.ts';

test('starts at 0 and moves to the cursor of the sweep whose writers have all ended', () => {
  const f = makeSweepFloor();
  assert.equal(f.floor, '0');
  f.swept('100', 50n, 40n); // the mark: cursor 100, xid 50
  assert.equal(f.floor, '0');
  f.swept('200', 60n, 51n); // xmin 51 > 50: every writer of ids ≤ 100 has ended
  assert.equal(f.floor, '100');
  f.swept('300', 70n, 61n);
  assert.equal(f.floor, '200');
});

test('an open transaction older than the mark holds the floor until it ends', () => {
  const f = makeSweepFloor();
  f.swept('100', 50n, 45n);
  // A writer with xid 45 stays open: xmin 45 in every later snapshot.
  for (const [cursor, xid] of [
    ['150', 60n],
    ['900', 70n],
    ['5000', 80n],
  ] as const) {
    f.swept(cursor, xid, 45n);
    assert.equal(f.floor, '0', `cursor ${cursor}`);
  }
  // It ends: the first mark (100) is passed, and the next one is this sweep's, not a later-held one.
  f.swept('6000', 90n, 85n);
  assert.equal(f.floor, '100');
  f.swept('7000', 95n, 91n);
  assert.equal(f.floor, '6000');
});

test('xmin equal to the mark is not enough: that transaction may still be open', () => {
  const f = makeSweepFloor();
  f.swept('100', 50n, 49n);
  f.swept('120', 55n, 50n);
  assert.equal(f.floor, '0');
  f.swept('130', 56n, 51n);
  assert.equal(f.floor, '100');
});

test('the floor never moves down', () => {
  const f = makeSweepFloor();
  f.swept('500', 10n, 5n);
  f.swept('600', 20n, 11n);
  assert.equal(f.floor, '500');
  // A smaller cursor cannot happen within one master term; the floor still does not go back.
  f.swept('400', 30n, 21n);
  assert.equal(f.floor, '600');
  f.swept('700', 40n, 31n);
  assert.equal(f.floor, '600');
});

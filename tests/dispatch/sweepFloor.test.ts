// Pure logic of the sweep's floor: it moves to an earlier sweep's cursor only once a later
// snapshot shows every transaction older than that sweep's own transaction id ended.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeSweepFloor } from '../../src/dispatch/sweepFloor.ts';

/** Sweeps in order: [cursor, the sweep's xid, its snapshot's xmin, the floor expected after it]. */
function sweeps(steps: [string, bigint, bigint, string][]): void {
  const f = makeSweepFloor();
  assert.equal(f.floor, '0');
  steps.forEach(([cursor, xid, xmin, floor], i) => {
    f.swept(cursor, xid, xmin);
    assert.equal(f.floor, floor, `after sweep ${i + 1} (cursor ${cursor}, xid ${xid}, xmin ${xmin})`);
  });
}

test('moves to the cursor of the sweep whose writers have all ended', () => {
  sweeps([
    ['100', 50n, 40n, '0'], // the mark: cursor 100, xid 50
    ['200', 60n, 51n, '100'], // xmin 51 > 50: every writer of ids ≤ 100 has ended
    ['300', 70n, 61n, '200'],
  ]);
});

test('an open transaction older than the mark holds the floor until it ends', () => {
  sweeps([
    ['100', 50n, 45n, '0'],
    // A writer with xid 45 stays open: xmin 45 in every later snapshot.
    ['150', 60n, 45n, '0'],
    ['900', 70n, 45n, '0'],
    ['5000', 80n, 45n, '0'],
    // It ends: the first mark (100) is passed, and the next mark is this sweep's.
    ['6000', 90n, 85n, '100'],
    ['7000', 95n, 91n, '6000'],
  ]);
});

test('xmin equal to the mark is not enough: that transaction may still be open', () => {
  sweeps([
    ['100', 50n, 49n, '0'],
    ['120', 55n, 50n, '0'],
    ['130', 56n, 51n, '100'],
  ]);
});

test('the floor never moves down', () => {
  sweeps([
    ['500', 10n, 5n, '0'],
    ['600', 20n, 11n, '500'],
    // A smaller cursor cannot happen within one master term; the floor still does not go back.
    ['400', 30n, 21n, '600'],
    ['700', 40n, 31n, '600'],
  ]);
});

test('how long the next step waits: from the sweep that set the mark, while an older transaction stays open', () => {
  const f = makeSweepFloor();
  assert.equal(f.waitingMs(0), 0);
  f.swept('100', 50n, 45n, 1_000); // mark set at 1 s
  f.swept('200', 60n, 45n, 2_000); // xid 45 still open: the mark stays
  f.swept('300', 70n, 45n, 3_000);
  assert.equal(f.waitingMs(3_500), 2_500);
  f.swept('400', 80n, 75n, 4_000); // it ended: a new mark at 4 s
  assert.equal(f.floor, '100');
  assert.equal(f.waitingMs(4_200), 200);
});

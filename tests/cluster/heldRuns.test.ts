// HeldRuns: what a new master may not start while runs of an earlier term may still run.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HeldRuns, heldKeys } from '../../src/cluster/heldRuns.ts';
import { isLoopback, secretMatches } from '../../src/rpc/security.ts';

const run = (runId: string, queueKey: string, ordered: boolean, eventId = '1', fnId = 1) => ({
  runId,
  queueKey,
  ordered,
  eventId,
  fnId,
});

describe('HeldRuns', () => {
  test('an ordered run holds its queue and its own event and function; an unordered one only the latter', () => {
    assert.deepEqual(heldKeys({ queueKey: 'c:t.k=1', ordered: true, eventId: '5', fnId: 2 }), ['r:5:2', 'q:c:t.k=1']);
    assert.deepEqual(heldKeys({ queueKey: 't:t', ordered: false, eventId: '5', fnId: 2 }), ['r:5:2']);
  });

  test('a queue is released when the node reports its run gone, and waiters wake', async () => {
    const held = new HeldRuns();
    held.hold(1, [run('7-1', 'q1', true, '10'), run('7-2', 'q2', true, '11')]);
    assert.ok(held.isHeld(['q:q1']));
    let woke = false;
    const waiting = held.whenClear(['r:99:1', 'q:q1']).then(() => {
      woke = true;
    });
    held.retain(1, new Set(['7-1']));
    await Promise.resolve();
    assert.equal(woke, false, 'still running there');
    assert.equal(held.isHeld(['q:q2']), false);
    held.retain(1, new Set());
    await waiting;
    assert.equal(woke, true);
    assert.equal(held.size, 0);
  });

  test('two runs holding one key: released only when both are gone; a node that is gone releases all', () => {
    const held = new HeldRuns();
    held.hold(1, [run('a', 'q', true, '1')]);
    held.hold(2, [run('b', 'q', true, '2')]);
    held.releaseNode(1);
    assert.ok(held.isHeld(['q:q']));
    assert.equal(held.countOn(2), 1);
    held.releaseNode(2);
    assert.equal(held.isHeld(['q:q']), false);
    assert.deepEqual(held.nodes(), []);
  });
});

describe('node-to-node secret', () => {
  test('compared by digest: equal only when equal, whatever the lengths', () => {
    assert.equal(secretMatches('s3cret-value', 's3cret-value'), true);
    assert.equal(secretMatches('s3cret-value', 's3cret-valuE'), false);
    assert.equal(secretMatches('s3cret-value', 's3cret'), false);
    assert.equal(secretMatches('s3cret-value', undefined), false);
    assert.equal(secretMatches(undefined, undefined), true, 'no secret configured: loopback only');
  });

  test('loopback addresses', () => {
    for (const host of ['localhost', '127.0.0.1', '127.1.2.3', '::1']) assert.equal(isLoopback(host), true, host);
    for (const host of ['0.0.0.0', '10.0.0.5', 'db.example.com', '::']) assert.equal(isLoopback(host), false, host);
  });
});

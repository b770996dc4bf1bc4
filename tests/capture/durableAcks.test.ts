// Which slot position may be confirmed, given writes that commit asynchronously.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeDurableAcks } from '../../src/capture/durableAcks.ts';

test('a write is confirmed only once the WAL is flushed past an insert position read after its commit', () => {
  const acks = makeDurableAcks();
  acks.written('0/100');
  // No position read after it yet: nothing is confirmable, however far the flush is.
  assert.equal(acks.durable(10_000n), null);
  acks.observedInsert(500n); // read during the next write: after the first commit
  acks.written('0/200');
  assert.equal(acks.durable(499n), null);
  assert.equal(acks.durable(500n), '0/100');
  assert.equal(acks.waiting, 1);
  acks.written('0/300', 900n); // read after its own commit
  acks.observedInsert(800n); // bounds only writes without one
  assert.equal(acks.durable(850n), '0/200');
  assert.equal(acks.durable(899n), null);
  assert.equal(acks.durable(900n), '0/300');
  assert.equal(acks.waiting, 0);
  assert.equal(acks.durable(2_000n), null);
});

// Pure ordering logic of the scheduler.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Scheduler } from '../../src/dispatch/scheduler.ts';

test('ordered queue: one run at a time in event order; unordered runs are ready at once', () => {
  const done: string[] = [];
  const s = new Scheduler<string>((job) => done.push(job.id));
  s.add('1', [{ queueKey: 'k', ordered: true, payload: 'a1' }]);
  s.add('2', [{ queueKey: 'k', ordered: true, payload: 'a2' }]);
  s.add('3', [{ queueKey: 'p', ordered: false, payload: 'b3' }]);
  s.add('4', [{ queueKey: 'p', ordered: false, payload: 'b4' }]);
  const first = s.take(10);
  assert.deepEqual(
    first.map((r) => r.payload),
    ['a1', 'b3', 'b4'],
  );
  assert.deepEqual(s.take(10), []);
  s.finish(first[0]!);
  const second = s.take(10);
  assert.deepEqual(
    second.map((r) => r.payload),
    ['a2'],
  );
  s.finish(first[1]!);
  s.finish(first[2]!);
  s.finish(second[0]!);
  assert.deepEqual(done, ['1', '3', '4', '2']);
});

test('runs of one event go in order; queues interleave without deadlock', () => {
  const done: string[] = [];
  const s = new Scheduler<string>((job) => done.push(job.id));
  for (const id of ['e1', 'e2']) {
    s.add(id, [
      { queueKey: 'K1', ordered: true, payload: `${id}f1` },
      { queueKey: 'K2', ordered: true, payload: `${id}f2` },
    ]);
  }
  const order: string[] = [];
  for (let guard = 0; guard < 10; guard++) {
    const runs = s.take(10);
    if (runs.length === 0) break;
    for (const r of runs) {
      order.push(r.payload);
      s.finish(r);
    }
  }
  assert.deepEqual(order.slice(0, 1), ['e1f1']);
  assert.ok(order.indexOf('e1f2') < order.indexOf('e2f2'));
  assert.ok(order.indexOf('e1f1') < order.indexOf('e2f1'));
  assert.deepEqual(done.sort(), ['e1', 'e2']);
});

test('putBack keeps the queue position for a retried run', () => {
  const s = new Scheduler<string>(() => undefined);
  s.add('1', [{ queueKey: 'k', ordered: true, payload: 'x1' }]);
  s.add('2', [{ queueKey: 'k', ordered: true, payload: 'x2' }]);
  const [r1] = s.take(1);
  s.putBack(r1!);
  const [again] = s.take(5);
  assert.equal(again!.payload, 'x1');
  assert.deepEqual(s.take(5), [], 'x2 still waits behind x1');
});

test('an event with no functions completes at once', () => {
  const done: string[] = [];
  const s = new Scheduler<string>((job) => done.push(job.id));
  s.add('9', []);
  assert.deepEqual(done, ['9']);
  assert.equal(s.size.jobs, 0);
});

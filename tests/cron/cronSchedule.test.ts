import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dueTime, parseCron } from '../../src/cron/cronSchedule.ts';

test('five-field expressions are minute-resolution UTC; missed firings collapse into the latest', () => {
  const c = parseCron('*/5 * * * *');
  assert.ok(c.ok);
  const since = new Date('2026-01-01T00:03:00Z');
  assert.equal(dueTime(c, since, new Date('2026-01-01T00:04:59Z')), null);
  assert.deepEqual(dueTime(c, since, new Date('2026-01-01T00:05:00Z')), new Date('2026-01-01T00:05:00Z'));
  assert.deepEqual(dueTime(c, since, new Date('2026-01-01T00:27:00Z')), new Date('2026-01-01T00:25:00Z'));
});

test('six-field expressions have seconds', () => {
  const c = parseCron('*/10 * * * * *');
  assert.deepEqual(
    dueTime(c, new Date('2026-01-01T00:00:01Z'), new Date('2026-01-01T00:00:15Z')),
    new Date('2026-01-01T00:00:10Z'),
  );
});

test('an invalid expression is an error naming it', () => {
  const c = parseCron('every minute');
  assert.equal(c.ok, false);
  assert.match(!c.ok ? c.error : '', /invalid cron expression "every minute"/);
  assert.equal(dueTime(c, new Date(0), new Date()), null);
});

// Pure planning: which functions an event runs, their queue keys and inputs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EventRow } from '../../src/db/queries/events.ts';
import { planRuns, queueKeyOf, type RegisteredFunction, toFunctionDef } from '../../src/dispatch/planRuns.ts';

function fn(id: number, topic: string, queue = true, table = 'public.t'): RegisteredFunction {
  const def = toFunctionDef({
    id,
    code: `code ${id}`,
    checksum: 'na',
    schema_table: table,
    topic,
    priority: 1,
    queue,
    cleanup_logs_min: 0,
    fn_logging: false,
    verbose_debug: false,
    lang: 'python',
    timeout_sec: 60,
    env: null,
    sign: null,
  });
  return { def, priority: 1, queue };
}

function event(partial: Partial<EventRow>): EventRow {
  return {
    id: '10',
    schema_table: 'public.t',
    trig: 1,
    new_row: { id: 5, grp: 'a', v: 'x' },
    old_row: null,
    done_fns: [],
    attempts: 0,
    fn_id: null,
    cron_id: null,
    fv: '0',
    ...partial,
  };
}

test("queue keys: '' per table, '.col' per table and value, names shared", () => {
  assert.equal(queueKeyOf(fn(1, ''), 'public.t', { id: 1 }), 't:public.t');
  assert.equal(queueKeyOf(fn(1, '.grp'), 'public.t', { grp: 'a' }), 'c:public.t.grp="a"');
  assert.notEqual(
    queueKeyOf(fn(1, '.grp'), 'public.t', { grp: 1 }),
    queueKeyOf(fn(1, '.grp'), 'public.t', { grp: '1' }),
  );
  assert.equal(queueKeyOf(fn(1, '.grp'), 'public.t', { id: 1 }), 'c:public.t.grp=null');
  assert.equal(queueKeyOf(fn(1, 'orders'), 'public.t', {}), 'n:orders');
  assert.equal(queueKeyOf(fn(1, 'orders', true, 'public.u'), 'public.u', {}), 'n:orders');
});

test('inputs carry trig, op, key (topic column + primary key), pk tuple and images', () => {
  const [run] = planRuns(event({ trig: 0, old_row: { id: 5, grp: 'b', v: 'old' } }), [fn(1, '.grp')], ['id']);
  assert.equal(run!.input.op, 'UPDATE');
  assert.deepEqual(run!.input.key, { grp: 'a', id: 5 });
  assert.deepEqual(run!.input.pk, [5]);
  assert.deepEqual(run!.input.old, { id: 5, grp: 'b', v: 'old' });
  const [del] = planRuns(event({ trig: 2, new_row: null, old_row: { id: 7, grp: 'z' } }), [fn(1, '')], ['id']);
  assert.deepEqual(del!.input.pk, [7], 'a DELETE keys on the old row');
});

test('functions already done and, for schedule events, other functions are skipped', () => {
  const fns = [fn(1, ''), fn(2, ''), fn(3, '')];
  assert.deepEqual(
    planRuns(event({ done_fns: [1] }), fns, ['id']).map((r) => r.fn.id),
    [2, 3],
  );
  assert.deepEqual(
    planRuns(event({ fn_id: 3, cron_id: 1 }), fns, ['id']).map((r) => r.fn.id),
    [3],
  );
});

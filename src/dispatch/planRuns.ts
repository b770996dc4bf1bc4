// From one captured event and the functions of its table to the runs it needs,
// each with the queue it belongs to (spec §6, without the original's bugs:
// '' and '.col' queues are per table, '.col' works for any column type).
import { createHash } from 'node:crypto';
import type { EventRow } from '../db/queries/events.ts';
import type { FunctionRow } from '../db/queries/functions.ts';
import { type FunctionDef, type Lang, type RunInput, TRIG_OP, type Trig } from '../runtimes/runtime.ts';

export interface PlannedRun {
  fn: FunctionDef;
  /** Queue key: runs with the same key and fn.queue never overlap and keep event order. */
  queueKey: string;
  ordered: boolean;
  input: RunInput;
}

export function toFunctionDef(row: FunctionRow): FunctionDef {
  return {
    id: row.id,
    lang: row.lang as Lang,
    code: row.code,
    codeHash: createHash('sha256').update(row.code).digest('hex'),
    schemaTable: row.schema_table,
    topic: row.topic,
    timeoutMs: row.timeout_sec * 1000,
    verboseDebug: row.verbose_debug,
    fnLogging: row.fn_logging,
  };
}

export interface RegisteredFunction {
  def: FunctionDef;
  priority: number;
  queue: boolean;
}

/** The queue a function's run of this event joins. */
export function queueKeyOf(fn: RegisteredFunction, table: string, row: Record<string, unknown> | null): string {
  const topic = fn.def.topic;
  if (topic === '') return `t:${table}`;
  if (topic.startsWith('.')) {
    const col = topic.slice(1);
    const value = row && col in row ? row[col] : null;
    return `c:${table}.${col}=${JSON.stringify(value ?? null)}`;
  }
  return `n:${topic}`;
}

export function planRuns(
  event: EventRow,
  fns: readonly RegisteredFunction[],
  pkColumns: readonly string[],
): PlannedRun[] {
  const trig = event.trig as Trig;
  const row = event.new_row ?? event.old_row;
  const done = new Set(event.done_fns);
  const pk = pkColumns.map((c) => (row ? (row[c] ?? null) : null));
  const runs: PlannedRun[] = [];
  for (const fn of fns) {
    if (done.has(fn.def.id) || (event.fn_id !== null && event.fn_id !== fn.def.id)) continue;
    const key: Record<string, unknown> = {};
    if (fn.def.topic.startsWith('.')) {
      const col = fn.def.topic.slice(1);
      key[col] = row ? (row[col] ?? null) : null;
    }
    pkColumns.forEach((c, i) => {
      key[c] = pk[i];
    });
    runs.push({
      fn: fn.def,
      queueKey: queueKeyOf(fn, event.schema_table, row),
      ordered: fn.queue,
      input: {
        eventId: event.id,
        table: event.schema_table,
        topic: fn.def.topic,
        trig,
        op: TRIG_OP[trig],
        key,
        pk,
        new: event.new_row,
        old: event.old_row,
      },
    });
  }
  return runs;
}

/** trig_value of a log row: the topic column's value for '.col' topics (as the original), else the key. */
export function trigValue(run: PlannedRun): Record<string, unknown> | null {
  return Object.keys(run.input.key).length ? run.input.key : null;
}

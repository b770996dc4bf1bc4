// Function rows and events for tests of the JS/TS runtime without a node around it.
import { createHash } from 'node:crypto';
import type { FunctionDef, RunInput } from '../../src/runtimes/runtime.ts';

let nextId = 1;

/** A JS function definition with a fresh id (each gets a module of its own). */
export function fn(code: string, overrides: Partial<FunctionDef> = {}): FunctionDef {
  return {
    id: nextId++,
    lang: 'js',
    code,
    codeHash: createHash('sha256').update(code).digest('hex'),
    schemaTable: 'public.src',
    topic: '.id',
    timeoutMs: 60_000,
    verboseDebug: false,
    fnLogging: false,
    ...overrides,
  };
}

export function event(overrides: Partial<RunInput> = {}): RunInput {
  return {
    eventId: '42',
    table: 'public.src',
    topic: '.id',
    trig: 1,
    op: 'INSERT',
    key: { id: 1 },
    pk: [1],
    new: { id: 1, name: 'ada' },
    old: null,
    ...overrides,
  };
}

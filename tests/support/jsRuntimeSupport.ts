// Function rows and events for tests of the JS/TS runtime without a node around it.
import { createHash } from 'node:crypto';
import { type JsRuntime, type JsRuntimeOptions, makeJsRuntime } from '../../src/runtimes/js/jsRuntime.ts';
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

/**
 * Runtimes for one test file with the options its tests share (2 run slots, 64 KiB output,
 * 64 MiB heap); `closeAll` in the file's after hook. `base` is read at each create (the server
 * and cache folder exist only once the before hook ran).
 */
export function runtimeMaker(base: () => Pick<JsRuntimeOptions, 'dbUrl' | 'cacheDir'>) {
  const made: JsRuntime[] = [];
  return {
    create(options: Partial<JsRuntimeOptions> = {}): JsRuntime {
      const created = makeJsRuntime({
        maxWorkers: 2,
        outputLimitBytes: 64 * 1024,
        memoryLimitMb: 64,
        ...base(),
        ...options,
      });
      made.push(created);
      return created;
    },
    async closeAll(graceMs = 1_000): Promise<void> {
      await Promise.all(made.splice(0).map((r) => r.close(graceMs)));
    },
  };
}

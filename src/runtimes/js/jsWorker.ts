// Worker-thread entry of the JS/TS runtime (jsRuntime.ts is the parent). Several runs at once,
// each in a run slot with its own database connection: import the compiled module (cached per
// path), call its default export with (event, ctx), report how it ended. Console output goes,
// by AsyncLocalStorage, to the run's slot buffer shared with the parent, so it survives a
// worker that is killed (timeout) or dies (exit, out of memory) in the middle of a run.
import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import type pg from 'pg';
import { makeStatementRunner } from '../../db/preparedStatements.ts';
import { isConnectionError } from '../../db/sqlState.ts';
import { coerceError } from '../../util/errors.ts';
import {
  CONTROL_CRASH_RUN,
  CONTROL_EXIT_RUN,
  type FromWorker,
  locateInStack,
  OutputBuffer,
  type ResultMessage,
  type RunMessage,
  summarize,
  type ToWorker,
  type WorkerConfig,
} from './workerProtocol.ts';

const CAPTURED = ['log', 'info', 'warn', 'error', 'debug'] as const;

/** The run a piece of code belongs to (AsyncLocalStorage store). */
interface RunState {
  runId: number;
  output: OutputBuffer;
  connectionFailed: boolean;
  /** Set when the run has ended: its slot's buffer may already belong to the next run. */
  done: boolean;
}

/** One concurrent run slot: its output buffer and its own database connection. */
interface Slot {
  output: OutputBuffer;
  client: pg.Client | undefined;
  connecting: Promise<pg.Client> | undefined;
}

function serve(port: MessagePort, config: WorkerConfig): void {
  const control = new Int32Array(config.control);
  const als = new AsyncLocalStorage<RunState>();
  const write = (state: RunState | undefined, args: unknown[]): void => {
    if (state && !state.done && !state.output.full) state.output.write(`${format(...args)}\n`);
  };
  // console.* goes to the buffer of the run the calling code belongs to; output of code that
  // belongs to no run, or to a run that has ended (a stray timer keeps its run's context), is dropped.
  const captured = (...args: unknown[]): void => write(als.getStore(), args);
  for (const name of CAPTURED) console[name] = captured;

  // Results wait for the end of this turn of the event loop and go together.
  let outbox: ResultMessage[] = [];
  const sendResults = (): void => {
    if (outbox.length === 0) return;
    const results = outbox;
    outbox = [];
    port.postMessage({ type: 'results', results } satisfies FromWorker);
  };
  const report = (result: ResultMessage): void => {
    if (outbox.push(result) === 1) setImmediate(sendResults);
  };

  // Tell the parent which run ended the thread, before it ends.
  const exit = process.exit.bind(process);
  process.exit = ((code?: number | string | null) => {
    const state = als.getStore();
    if (state) Atomics.store(control, CONTROL_EXIT_RUN, state.runId);
    sendResults(); // runs that ended earlier in this turn keep their results
    return exit(code as number | undefined);
  }) as typeof process.exit;
  process.on('uncaughtExceptionMonitor', () => {
    const state = als.getStore();
    if (state) Atomics.store(control, CONTROL_CRASH_RUN, state.runId);
    sendResults();
  });

  // Stack traces of TypeScript functions point at their source lines (compile.ts writes inline maps).
  process.setSourceMapsEnabled(true);

  const slots: Slot[] = [];

  // --- a slot's database connection: one client, connected on first use, reconnected after an error ---
  function dropClient(slot: Slot): void {
    const current = slot.client;
    slot.client = undefined;
    current?.end().catch(() => undefined);
  }

  // Connections opened at start, taken by the first slots that need one; a slot that needs one
  // while they are still connecting waits for one rather than opening another.
  const spare: pg.Client[] = [];
  let preconnecting = 0;
  const spareWaiters: ((client: pg.Client | undefined) => void)[] = [];

  async function open(): Promise<pg.Client> {
    const { default: pgModule } = await import('pg');
    const fresh = new pgModule.Client({
      connectionString: config.dbUrl,
      application_name: 'rppd-js-function',
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
    });
    try {
      await fresh.connect();
    } catch (err) {
      fresh.end().catch(() => undefined);
      throw err;
    }
    return fresh;
  }

  function preconnect(n: number): void {
    for (let i = 0; i < n; i++) {
      preconnecting++;
      open().then(
        (client) => {
          preconnecting--;
          const waiter = spareWaiters.shift();
          if (waiter) return waiter(client);
          // A server restart makes an idle client emit 'error'; without a listener that would crash the worker.
          const forget = () => {
            const at = spare.indexOf(client);
            if (at >= 0) spare.splice(at, 1);
          };
          client.on('error', forget);
          client.on('end', forget);
          spare.push(client);
        },
        () => {
          // The database is not there yet: slots connect when they need to.
          preconnecting--;
          spareWaiters.shift()?.(undefined);
        },
      );
    }
  }

  async function takeSpare(): Promise<pg.Client | undefined> {
    const ready = spare.pop();
    if (ready || preconnecting <= spareWaiters.length) return ready;
    return new Promise((resolve) => spareWaiters.push(resolve));
  }

  async function connect(slot: Slot): Promise<pg.Client> {
    const fresh = (await takeSpare()) ?? (await open());
    fresh.removeAllListeners('error').removeAllListeners('end');
    // Forget a client that failed or ended, so that the next query reconnects.
    fresh.on('error', () => {
      if (slot.client === fresh) dropClient(slot);
    });
    fresh.on('end', () => {
      if (slot.client === fresh) slot.client = undefined;
    });
    slot.client = fresh;
    return fresh;
  }

  // Concurrent first queries of one run share one connection attempt.
  function connectOnce(slot: Slot): Promise<pg.Client> {
    slot.connecting ??= connect(slot).finally(() => {
      slot.connecting = undefined;
    });
    return slot.connecting;
  }

  const runStatement = makeStatementRunner({ threshold: config.prepareThreshold });

  function makeQuery(slot: Slot, state: RunState) {
    return async (text: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number }> => {
      try {
        const current = slot.client ?? (await connectOnce(slot));
        const result = await runStatement(current, text, params);
        return { rows: result.rows, rowCount: result.rowCount ?? 0 };
      } catch (err) {
        if (isConnectionError(err)) {
          state.connectionFailed = true;
          dropClient(slot);
        }
        throw err;
      }
    };
  }

  // A function that opened a transaction and did not finish it must not leave it open for
  // the next run on this connection.
  async function endOpenTransaction(slot: Slot): Promise<void> {
    const client = slot.client;
    const status = client?.getTransactionStatus();
    if (!client || status === 'I' || status === null) return;
    await client.query('ROLLBACK').catch(() => dropClient(slot));
  }

  // --- modules: one import per file; a failed import is retried under a fresh URL, because
  // Node caches a module's failed evaluation (e.g. a top-level query during a DB restart) ---
  const modules = new Map<string, Promise<Record<string, unknown>>>();
  const latestPath = new Map<number, string>();
  let failedImports = 0;
  let supersededModules = 0;

  function loadModule(fnId: number, path: string): Promise<Record<string, unknown>> {
    let loading = modules.get(path);
    if (!loading) {
      const previous = latestPath.get(fnId);
      if (previous !== undefined && previous !== path) {
        modules.delete(previous);
        supersededModules++;
      }
      latestPath.set(fnId, path);
      const url = pathToFileURL(path).href + (failedImports > 0 ? `?attempt=${failedImports}` : '');
      loading = import(url) as Promise<Record<string, unknown>>;
      modules.set(path, loading);
      loading.catch(() => {
        modules.delete(path);
        failedImports++;
      });
    }
    return loading;
  }

  async function run(message: RunMessage, slot: Slot): Promise<Omit<ResultMessage, 'supersededModules'>> {
    const base = { type: 'result', runId: message.runId } as const;
    const state: RunState = { runId: message.runId, output: slot.output, connectionFailed: false, done: false };
    try {
      let module: Record<string, unknown>;
      try {
        // Top-level code of the module runs in the context of the run that loads it.
        module = await als.run(state, () => loadModule(message.fn.id, message.path));
      } catch (err) {
        const error = `cannot load the function: ${summarize(err)}`;
        return {
          ...base,
          ok: false,
          kind: 'compile',
          error,
          location: locateInStack(coerceError(err).stack),
          tookMs: 0,
        };
      }
      const handler = module.default;
      if (typeof handler !== 'function') {
        const found = handler === undefined ? ' has no default export' : `'s default export is a ${typeof handler}`;
        const error = `the module${found}, expected \`export default async (event, ctx) => { … }\``;
        return { ...base, ok: false, kind: 'compile', error, tookMs: 0 };
      }
      const log = (...args: unknown[]): void => write(state, args);
      const ctx = { db: { query: makeQuery(slot, state) }, fn: message.fn, log };
      const started = performance.now();
      try {
        await als.run(state, () => handler(message.event, ctx));
        return { ...base, ok: true, tookMs: performance.now() - started };
      } catch (err) {
        const tookMs = performance.now() - started;
        // A lost connection is not the function's fault, even when the code wrapped the error.
        const kind = isConnectionError(err) || state.connectionFailed ? 'transient' : 'function';
        return {
          ...base,
          ok: false,
          kind,
          error: summarize(err),
          location: locateInStack(coerceError(err).stack),
          tookMs,
        };
      }
    } finally {
      state.done = true;
      await endOpenTransaction(slot);
    }
  }

  async function close(): Promise<void> {
    await Promise.all([
      ...slots.map((slot) => {
        const current = slot?.client;
        if (slot) slot.client = undefined;
        return current?.end().catch(() => undefined);
      }),
      ...spare.splice(0).map((client) => client.end().catch(() => undefined)),
    ]);
    exit(0);
  }

  function start(message: RunMessage): void {
    let slot = slots[message.slot];
    if (message.output) {
      slot = { output: new OutputBuffer(message.output), client: undefined, connecting: undefined };
      slots[message.slot] = slot;
    }
    if (!slot) {
      report({
        type: 'result',
        runId: message.runId,
        ok: false,
        kind: 'internal',
        error: `rppd worker failed: unknown run slot ${message.slot}`,
        tookMs: 0,
        supersededModules,
      });
      return;
    }
    const ended = (result: Omit<ResultMessage, 'supersededModules'>): void => {
      const next = claimAhead();
      if (!next) {
        report({ ...result, supersededModules });
        return;
      }
      // The slot goes to the next run at once: this run's output leaves with its result.
      const output = slot.output.read();
      slot.output.reset();
      report({ ...result, supersededModules, next: next.runId, output });
      start({ ...next, slot: message.slot, output: undefined });
    };
    run(message, slot).then(ended, (err: unknown) =>
      ended({
        type: 'result',
        runId: message.runId,
        ok: false,
        kind: 'internal',
        error: `rppd worker failed: ${summarize(err)}`,
        tookMs: 0,
      }),
    );
  }

  // --- runs sent ahead: started here, in the slot of the run that ends, without a round trip
  // through the parent's dispatcher (bench/README.md, finding 23) ---
  const claims = new Int32Array(config.claims);
  const ahead: RunMessage[] = [];

  /** The oldest run sent ahead that the parent has not taken back, now claimed; undefined if none. */
  function claimAhead(): RunMessage | undefined {
    for (let next = ahead.shift(); next; next = ahead.shift()) {
      const { index, token } = next.ahead!;
      if (Atomics.compareExchange(claims, index, token, -token) === token) return next;
    }
    return undefined;
  }

  port.on('message', (message: ToWorker) => {
    if (message.type === 'close') {
      void close();
      return;
    }
    if (message.type === 'preload') {
      loadModule(message.fnId, message.path).catch(() => undefined);
      return;
    }
    for (const m of message.runs) {
      if (m.ahead) ahead.push(m);
      else start(m);
    }
  });
  preconnect(config.preconnect);
  port.postMessage({ type: 'ready' } satisfies FromWorker);
}

// The parent imports this file for its helpers; only a worker started by jsRuntime.ts serves.
const config = workerData as Partial<WorkerConfig> | undefined;
if (parentPort && config?.rppdJsWorker) serve(parentPort, config as WorkerConfig);

// What the JS runtime's parent (workerHandle.ts) and its worker threads (jsWorker.ts) share:
// the messages between them, the output buffer of a run slot, and the control words.
import { coerceError } from '../../util/errors.ts';
import type { RunInput } from '../runtime.ts';
export interface WorkerConfig {
  rppdJsWorker: true;
  dbUrl: string;
  /** Int32 words, see CONTROL_*. */
  control: SharedArrayBuffer;
  /** Int32 words, one per place in the thread's queue of runs sent ahead (see RunMessage.ahead). */
  claims: SharedArrayBuffer;
  /** Database connections to open at start, for the thread's first runs (no connect on their path). */
  preconnect: number;
  /** ctx.db.query prepares a statement its connection has run this many times (0: never). */
  prepareThreshold: number;
}

export interface RunMessage {
  type: 'run';
  runId: number;
  /** The run slot in this thread: its output buffer and its own database connection. */
  slot: number;
  /** Set when the slot is new: its output buffer. */
  output?: SharedArrayBuffer;
  /** The compiled module file. */
  path: string;
  fn: { id: number; schemaTable: string; topic: string };
  event: RunInput;
  /**
   * Sent ahead, while every slot of the thread was busy: the thread starts it itself in the slot
   * of the next run to end, once it claims place `index` of the claims words (compare-and-swap of
   * `token` to -token). The parent takes it back by swapping `token` to 0 first.
   */
  ahead?: { index: number; token: number };
}

/** Runs started in one turn of the parent's event loop travel in one message. */
export type ToWorker =
  | { type: 'runs'; runs: RunMessage[] }
  /** Import a compiled function ahead of its first run; a failure shows at that run. */
  | { type: 'preload'; fnId: number; path: string }
  | { type: 'close' };

export interface ResultMessage {
  type: 'result';
  runId: number;
  ok: boolean;
  kind?: 'function' | 'compile' | 'transient' | 'internal';
  error?: string;
  /** Where in the function's code it failed, e.g. "line 3:11". */
  location?: string;
  tookMs: number;
  /** Modules loaded for code that has since changed: they stay in memory until the worker ends. */
  supersededModules: number;
  /** The run sent ahead that this thread started in this run's slot, and so this run's output (read before reuse). */
  next?: number;
  output?: string;
}

/** Results of one turn of the worker's event loop travel in one message. */
export type FromWorker = { type: 'ready' } | { type: 'results'; results: ResultMessage[] };

const FUNCTION_FILE = /fn-\d+-[0-9A-Za-z]+\.mjs/;

/** "line L:C" of the first stack frame inside a function module (TypeScript lines via source maps). */
export function locateInStack(stack: string | undefined): string | undefined {
  if (!stack) return undefined;
  const lines = stack.split('\n');
  for (const [index, line] of lines.entries()) {
    if (!FUNCTION_FILE.test(line)) continue;
    const frame = /:(\d+):(\d+)\)?\s*$/.exec(line);
    if (frame) {
      const name = /^\s*at (?:async )?([\w$.<>]+) \(/.exec(line)?.[1];
      // Default exports are named "default" (esbuild: "fn_1_abc_default"): not worth showing.
      const inName = name && !name.endsWith('default') ? ` (in ${name})` : '';
      return `line ${frame[1]}:${frame[2]}${inName}`;
    }
    // A SyntaxError while loading starts with "file:///…/fn-1-x.mjs:3", the source line and a caret.
    const header = /:(\d+)\s*$/.exec(line);
    if (header && index === 0) {
      const caret = lines[2]?.indexOf('^') ?? -1;
      return caret >= 0 ? `line ${header[1]}:${caret + 1}` : `line ${header[1]}`;
    }
  }
  return undefined;
}

/** "TypeError: x is not a function", with the SQLSTATE for database errors. */
export function summarize(value: unknown): string {
  const err = coerceError(value);
  const code = (err as { code?: unknown }).code;
  const isSqlState = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
  // pg names server errors after the protocol message type, 'error'.
  const name = isSqlState && err.name === 'error' ? 'DatabaseError' : err.name || 'Error';
  return `${name}: ${err.message}${isSqlState ? ` (SQLSTATE ${code})` : ''}`;
}

/** Captured output in a SharedArrayBuffer: [bytes used, truncated flag] then the bytes. */
export class OutputBuffer {
  private readonly header: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly encoder = new TextEncoder();

  constructor(readonly shared: SharedArrayBuffer) {
    this.header = new Int32Array(shared, 0, 2);
    this.bytes = new Uint8Array(shared, 8);
  }

  static create(limitBytes: number): OutputBuffer {
    return new OutputBuffer(new SharedArrayBuffer(8 + Math.max(0, Math.floor(limitBytes))));
  }

  get full(): boolean {
    return Atomics.load(this.header, 1) === 1;
  }

  reset(): void {
    Atomics.store(this.header, 0, 0);
    Atomics.store(this.header, 1, 0);
  }

  /** Keeps the start: once the limit is reached, everything after it is dropped. */
  write(text: string): void {
    if (this.full) return;
    const used = Atomics.load(this.header, 0);
    // encodeInto writes whole characters only, so a cut never splits a UTF-8 sequence.
    const { read, written } = this.encoder.encodeInto(text, this.bytes.subarray(used));
    Atomics.store(this.header, 0, used + written);
    if (read < text.length) Atomics.store(this.header, 1, 1);
  }

  read(): string {
    const used = Atomics.load(this.header, 0);
    const text = Buffer.from(this.shared, 8, used).toString('utf8');
    if (!this.full) return text;
    const separator = text === '' || text.endsWith('\n') ? '' : '\n';
    return `${text}${separator}[rppd: output truncated at ${this.bytes.length} bytes]`;
  }
}

/** Control words shared with the parent: which run called process.exit / threw an uncaught error. */
export const CONTROL_EXIT_RUN = 0;
export const CONTROL_CRASH_RUN = 1;
export const CONTROL_WORDS = 2;

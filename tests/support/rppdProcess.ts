// Real rppd node processes for tests: `node bin/rppd.js start …` with its log
// lines (pino JSON) collected, so tests wait for what the node says.
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './waitFor.ts';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const rppdBin = join(repoRoot, 'bin', 'rppd.js');

export interface LogLine {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

export interface RppdProcess {
  proc: ChildProcess;
  lines: LogLine[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number, what?: string): Promise<LogLine>;
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

export function spawnRppd(args: string[], env: Record<string, string | undefined> = {}): RppdProcess {
  const proc = spawn(process.execPath, [rppdBin, ...args], {
    cwd: repoRoot,
    env: { ...process.env, RPPD_LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: LogLine[] = [];
  const raw: string[] = [];
  const stderr: string[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      raw.push(line);
      try {
        lines.push(JSON.parse(line));
      } catch {
        lines.push({ msg: line });
      }
      nl = buf.indexOf('\n');
    }
  });
  proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
  });
  let exitedNow = false;
  void exited.then(() => {
    exitedNow = true;
  });
  process.once('exit', () => {
    if (!exitedNow) proc.kill('SIGKILL');
  });
  return {
    proc,
    lines,
    stderr,
    exited,
    output: () => `${raw.join('\n')}\n${stderr.join('')}`,
    waitForLog(predicate, timeoutMs = 60_000, what = 'a log line') {
      return waitFor(
        () => {
          if (exitedNow) throw new Error(`rppd exited early:\n${raw.slice(-30).join('\n')}\n${stderr.join('')}`);
          return lines.find(predicate);
        },
        { timeoutMs, what },
      );
    },
    async kill(signal = 'SIGTERM') {
      if (!exitedNow) proc.kill(signal);
      return exited;
    },
  };
}

// pgbench with the bench's one custom script: single-row autocommit INSERTs into src.
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const INSERT_SCRIPT = "\\set k random(0, 999)\nINSERT INTO src (k, payload) VALUES (:k, 'payload');\n";

let scriptPath: string | undefined;
function script(): string {
  if (!scriptPath) {
    scriptPath = join(mkdtempSync(join(tmpdir(), 'rppd-bench-')), 'insert.sql');
    writeFileSync(scriptPath, INSERT_SCRIPT);
  }
  return scriptPath;
}

export interface PgbenchResult {
  tps: number;
  transactions: number;
  wallMs: number;
}

/** Either for `seconds` or for `transactions` in total (split evenly over the clients). */
export async function pgbench(
  binDir: string,
  url: string,
  options: { clients: number; seconds?: number; transactions?: number },
): Promise<PgbenchResult> {
  const { clients } = options;
  const args = ['-n', '-f', script(), '-c', String(clients), '-j', String(Math.min(clients, 2)), '-M', 'prepared'];
  if (options.seconds) args.push('-T', String(options.seconds));
  else args.push('-t', String(Math.ceil((options.transactions ?? 1000) / clients)));
  const started = performance.now();
  const { stdout } = await run(join(binDir, 'pgbench'), [...args, url], { encoding: 'utf8', maxBuffer: 1 << 24 });
  const wallMs = performance.now() - started;
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  const done = /number of transactions actually processed: (\d+)/.exec(stdout);
  if (!tps || !done) throw new Error(`cannot read pgbench output:\n${stdout}`);
  return { tps: Number(tps[1]), transactions: Number(done[1]), wallMs };
}

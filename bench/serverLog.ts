// What PostgreSQL itself did during a measured window, read back from its log: checkpoints and
// autovacuum runs (the bench starts the server with log_checkpoints and
// log_autovacuum_min_duration = 0). A latency round that misses can then be read next to them.
import { readFileSync } from 'node:fs';

export interface ServerEvent {
  /** Epoch ms of the log line. */
  atMs: number;
  text: string;
}

// log_line_prefix '%m [%p] ': "2026-12-03 18:50:01.123 UTC [1234] LOG:  checkpoint starting: time"
const LINE = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] LOG:\s+(.*)$/;
const WANTED = /^(checkpoint (starting|complete)|automatic (vacuum|analyze))/;

/** The checkpoint and autovacuum lines logged between fromMs and toMs (epoch ms), with their elapsed time. */
export function serverEvents(logFile: string, fromMs: number, toMs: number): ServerEvent[] {
  let lines: string[];
  try {
    lines = readFileSync(logFile, 'utf8').split('\n');
  } catch {
    return [];
  }
  const out: ServerEvent[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = LINE.exec(lines[i]!);
    if (!m || !WANTED.test(m[2]!) || /"[^".]+\.(pg_catalog|information_schema)\./.test(m[2]!)) continue;
    const atMs = Date.parse(`${m[1]!.replace(' ', 'T')}Z`);
    if (atMs < fromMs || atMs > toMs) continue;
    let text = m[2]!;
    // An autovacuum report goes on over tab-indented lines; keep its elapsed time.
    for (let j = i + 1; j < lines.length && lines[j]!.startsWith('\t'); j++) {
      const elapsed = /elapsed: ([\d.]+ s)/.exec(lines[j]!);
      if (elapsed) text += ` (elapsed ${elapsed[1]})`;
    }
    out.push({ atMs, text: text.length > 200 ? `${text.slice(0, 200)}…` : text });
  }
  return out;
}

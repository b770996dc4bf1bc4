// Results: one row per measured figure, printed as a table per workload and written to
// bench/results/<stamp>.json and .md.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Target {
  /** e.g. "≥ 0.9" */
  text: string;
  pass: boolean;
}

export interface ResultRow {
  workload: string;
  /** What was run, e.g. "8 clients" or "ordered (.k, queue=true)". */
  case: string;
  system: string;
  metric: string;
  value: number;
  unit: string;
  /** value divided by the reference figure named in `ratioTo`. */
  ratio?: number;
  ratioTo?: string;
  target?: Target;
  /** CPU cores other processes on the machine used meanwhile (it is shared; see README). */
  otherCores?: number;
  note?: string;
}

export interface RunInfo {
  startedAt: string;
  finishedAt?: string;
  durationSec?: number;
  quick: boolean;
  argv: string[];
  machine: { cpus: number; memGb: number; node: string; peerNode: string; postgres: string };
  versions: Record<string, string>;
  sizes: unknown;
  notes: string[];
}

export function fmt(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function renderMarkdown(info: RunInfo, rows: ResultRow[], extra: string[]): string {
  const out: string[] = [];
  out.push(`# rppd benchmark ${info.startedAt}${info.quick ? ' (quick)' : ''}`, '');
  out.push(
    `Machine: ${info.machine.cpus} CPUs, ${info.machine.memGb} GB; rppd on Node ${info.machine.node}, ` +
      `peers on Node ${info.machine.peerNode}; ${info.machine.postgres} (default durability).`,
  );
  out.push(
    `Versions: ${Object.entries(info.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}.`,
  );
  if (info.durationSec !== undefined) out.push(`Run took ${Math.round(info.durationSec)} s.`);
  out.push('');
  const workloads = [...new Set(rows.map((r) => r.workload))];
  for (const w of workloads) {
    out.push(`## ${w}`, '');
    out.push('| case | system | metric | value | ratio | target | other load | note |');
    out.push('| --- | --- | --- | ---: | ---: | --- | ---: | --- |');
    for (const r of rows.filter((x) => x.workload === w)) {
      const ratio = r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}${r.ratioTo ? ` (vs ${r.ratioTo})` : ''}`;
      const target = r.target ? `${r.target.text} ${r.target.pass ? 'PASS' : 'MISS'}` : '';
      const other = r.otherCores === undefined ? '' : `${r.otherCores.toFixed(2)} cores`;
      out.push(
        `| ${r.case} | ${r.system} | ${r.metric} | ${fmt(r.value)} ${r.unit} | ${ratio} | ${target} | ${other} | ${r.note ?? ''} |`,
      );
    }
    out.push('');
  }
  if (info.notes.length) out.push('## Notes', '', ...info.notes.map((n) => `- ${n}`), '');
  if (extra.length) out.push(...extra, '');
  return out.join('\n');
}

/** Writes <dir>/<stamp>.json and .md; returns the paths. */
export function writeResults(
  dir: string,
  stamp: string,
  info: RunInfo,
  rows: ResultRow[],
  extra: { markdown: string[]; data: Record<string, unknown> },
): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const json = join(dir, `${stamp}.json`);
  const md = join(dir, `${stamp}.md`);
  writeFileSync(json, `${JSON.stringify({ info, results: rows, ...extra.data }, null, 2)}\n`);
  writeFileSync(md, renderMarkdown(info, rows, extra.markdown));
  return { json, md };
}

/** A compact console table of rows as they come in. */
export function printRow(r: ResultRow): void {
  const ratio = r.ratio === undefined ? '' : ` ratio ${r.ratio.toFixed(2)}${r.ratioTo ? ` vs ${r.ratioTo}` : ''}`;
  const target = r.target ? ` [${r.target.text}: ${r.target.pass ? 'PASS' : 'MISS'}]` : '';
  const note = r.note ? ` (${r.note})` : '';
  const other = r.otherCores === undefined ? '' : ` {other load ${r.otherCores.toFixed(2)} cores}`;
  console.log(
    `  ${r.workload} | ${r.case} | ${r.system} | ${r.metric}: ${fmt(r.value)} ${r.unit}${ratio}${target}${other}${note}`,
  );
}

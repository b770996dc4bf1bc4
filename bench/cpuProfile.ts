// Reads a V8 .cpuprofile (node --cpu-prof) into self time per function and per area.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  file: string;
  durationMs: number;
  /** Self time of everything but (idle). */
  busyMs: number;
  top: { name: string; selfMs: number; share: number }[];
  areas: { area: string; selfMs: number; share: number }[];
}

/** Where a frame belongs: rppd's own files, pg, other packages, Node internals, V8 pseudo-frames. */
function areaOf(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  if (url.includes('/node_modules/pg') || url.includes('/pg-protocol/')) return 'pg driver';
  if (url.includes('/node_modules/pino') || url.includes('/sonic-boom/')) return 'logging';
  if (url.includes('/node_modules/')) return `package ${url.split('/node_modules/').pop()!.split('/')[0]}`;
  if (url.startsWith('node:')) return 'node internals';
  const src = /\/src\/(.+)$/.exec(url);
  if (src) return `rppd ${src[1]!.split('/')[0]}`;
  if (url.includes('rppd-bench-cache') || /fn-\d+-/.test(url)) return 'user function';
  return basename(url);
}

/** Self time summed over one or more profiles (e.g. all worker threads). */
export function summarizeProfile(files: string[], top = 25): ProfileSummary {
  const byName = new Map<string, number>();
  const byArea = new Map<string, number>();
  let busy = 0;
  let durationMs = 0;
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
    durationMs += (profile.endTime - profile.startTime) / 1000;
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const self = new Map<number, number>();
    const samples = profile.samples ?? [];
    const deltas = profile.timeDeltas ?? [];
    for (let i = 0; i < samples.length; i++) {
      // A sample's time is the delta to the next one.
      const dt = (deltas[i + 1] ?? 0) / 1000;
      self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + dt);
    }
    for (const [id, ms] of self) {
      const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
      if (functionName === '(idle)') continue;
      busy += ms;
      const name = `${functionName || '(anonymous)'} ${url ? `${basename(url)}:${lineNumber + 1}` : ''}`.trim();
      byName.set(name, (byName.get(name) ?? 0) + ms);
      const area = areaOf(url, functionName);
      byArea.set(area, (byArea.get(area) ?? 0) + ms);
    }
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return {
    file: files.map((f) => basename(f)).join(', '),
    durationMs,
    busyMs: busy,
    top: sorted(byName)
      .slice(0, top)
      .map(([name, selfMs]) => ({ name, selfMs, share: selfMs / busy })),
    areas: sorted(byArea).map(([area, selfMs]) => ({ area, selfMs, share: selfMs / busy })),
  };
}

export function profileMarkdown(s: ProfileSummary, title: string): string[] {
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  const out = [
    `### ${title}`,
    '',
    `${s.file}: ${(s.durationMs / 1000).toFixed(1)} s of thread time profiled, ${(s.busyMs / 1000).toFixed(1)} s not idle ` +
      `(${pct(s.busyMs / s.durationMs)}). V8 samples wall time: "not idle" includes waiting for a CPU.`,
    '',
    '| area | self ms | share |',
    '| --- | ---: | ---: |',
    ...s.areas.slice(0, 15).map((a) => `| ${a.area} | ${Math.round(a.selfMs)} | ${pct(a.share)} |`),
    '',
    '| function | self ms | share |',
    '| --- | ---: | ---: |',
    ...s.top.map((t) => `| \`${t.name}\` | ${Math.round(t.selfMs)} | ${pct(t.share)} |`),
    '',
  ];
  return out;
}

// The extension's SQL files (extension/): one source for CREATE EXTENSION and
// for `rppd init` on servers without extension files.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const extensionDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'extension');

export interface Script {
  from: string | null;
  to: string;
  file: string;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

export { compareVersions };

export function latestVersion(): string {
  const control = readFileSync(join(extensionDir, 'rppd.control'), 'utf8');
  const match = /default_version\s*=\s*'([^']+)'/.exec(control);
  if (!match?.[1]) throw new Error('extension/rppd.control has no default_version');
  return match[1];
}

export function listScripts(): Script[] {
  return readdirSync(join(extensionDir, 'sql'))
    .map((file): Script | null => {
      const m = /^rppd--([\d.]+?)(?:--([\d.]+))?\.sql$/.exec(file);
      if (!m?.[1]) return null;
      return m[2] ? { from: m[1], to: m[2], file } : { from: null, to: m[1], file };
    })
    .filter((s): s is Script => s !== null);
}

/** The scripts that take a schema from `current` (null = nothing installed) to `target`. */
export function upgradePath(current: string | null, target: string): Script[] {
  const scripts = listScripts();
  if (current === null) {
    // Newest base script not above target, then upgrades from there.
    const bases = scripts.filter((s) => s.from === null && compareVersions(s.to, target) <= 0);
    bases.sort((a, b) => compareVersions(b.to, a.to));
    const base = bases[0];
    if (!base) throw new Error(`no install script for rppd ${target}`);
    return [base, ...upgradePath(base.to, target)];
  }
  const path: Script[] = [];
  let at = current;
  while (compareVersions(at, target) < 0) {
    const next = scripts.filter((s) => s.from === at).sort((a, b) => compareVersions(b.to, a.to))[0];
    if (!next) throw new Error(`no upgrade script from rppd ${at} towards ${target}`);
    path.push(next);
    at = next.to;
  }
  return path;
}

/** Script text with the schema substituted, as PostgreSQL does for @extschema@. */
export function scriptSql(script: Script, quotedSchema: string): string {
  return readFileSync(join(extensionDir, 'sql', script.file), 'utf8')
    .split('\n')
    .filter((line) => !line.startsWith('\\echo'))
    .join('\n')
    .replaceAll('@extschema@', quotedSchema);
}

/** Copy the control and SQL files into <sharedir>/extension (for CREATE EXTENSION). */
export function copyExtensionFiles(shareDir: string): string[] {
  const target = join(shareDir, 'extension');
  if (!existsSync(shareDir)) throw new Error(`PostgreSQL share directory ${shareDir} does not exist`);
  mkdirSync(target, { recursive: true });
  const copied: string[] = [];
  copyFileSync(join(extensionDir, 'rppd.control'), join(target, 'rppd.control'));
  copied.push(join(target, 'rppd.control'));
  for (const s of listScripts()) {
    copyFileSync(join(extensionDir, 'sql', s.file), join(target, s.file));
    copied.push(join(target, s.file));
  }
  return copied;
}

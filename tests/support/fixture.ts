// A real PostgreSQL with rppd installed, plus real node processes, for one test file.
import pg from 'pg';
import { installSchema } from '../../src/db/installSchema.ts';
import { freePort, type PgServer, type StartOptions, startPg } from './pgServer.ts';
import { type RppdProcess, spawnRppd } from './rppdProcess.ts';
import { waitFor } from './waitFor.ts';

export interface Fixture {
  server: PgServer;
  url: string;
  /** Replace after a server restart: the old connection is gone. */
  db: pg.Client;
  schema: string;
  query<T extends pg.QueryResultRow = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  startNode(options?: { name?: string; env?: Record<string, string>; args?: string[] }): Promise<RppdProcess>;
  close(): Promise<void>;
}

export const PYTHON = '/usr/bin/python3';

export async function setupFixture(
  options: { schema?: string; install?: boolean; pg?: StartOptions } = {},
): Promise<Fixture> {
  const server = await startPg(options.pg);
  const schema = options.schema ?? 'public';
  const db = new pg.Client({ connectionString: server.url });
  await db.connect();
  db.on('error', () => undefined);
  if (options.install !== false) await installSchema(db, schema, { mode: 'sql' });
  const nodes: RppdProcess[] = [];
  let n = 0;
  const fixture: Fixture = {
    server,
    url: server.url,
    db,
    schema,
    async query(text, params) {
      return (await fixture.db.query(text, params)).rows;
    },
    async startNode(o = {}) {
      const port = await freePort();
      const name = o.name ?? `node${++n}`;
      const node = spawnRppd(['start', schema, server.url, `127.0.0.1:${port}`, `--name=${name}`, ...(o.args ?? [])], {
        RPPD_PYTHON: PYTHON,
        // Tests place runs by free slots alone; the CPU check (spread_cpu_idle) has its own test,
        // and a busy CI host would otherwise keep every run on the master.
        RPPD_SPREAD_CPU_IDLE: '0',
        RPPD_CACHE_DIR: `/tmp/rppd-test-cache-${process.pid}`,
        ...o.env,
      });
      nodes.push(node);
      await node.waitForLog(
        (l) => l.msg === 'master: lease acquired' || l.msg === 'registered in rppd_config',
        90_000,
        `${name} to start`,
      );
      return node;
    },
    async close() {
      await Promise.all(nodes.map((p) => p.kill('SIGKILL')));
      await fixture.db.end().catch(() => undefined);
      await server.stop();
    },
  };
  return fixture;
}

/** Wait until `sql` returns `count` rows (or more when atLeast). */
export async function waitForRows<T extends pg.QueryResultRow>(
  f: Fixture,
  sql: string,
  count: number,
  params: unknown[] = [],
  timeoutMs = 60_000,
): Promise<T[]> {
  return waitFor(
    async () => {
      const rows = (await f.db.query<T>(sql, params)).rows;
      return rows.length >= count ? rows : undefined;
    },
    { timeoutMs, what: `${count} rows from: ${sql}` },
  );
}

export async function waitForMaster(node: RppdProcess): Promise<void> {
  await node.waitForLog((l) => l.msg === 'master: lease acquired', 90_000, 'lease acquired');
}

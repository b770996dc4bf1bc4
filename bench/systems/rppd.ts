// rppd: installed into schema "rppd" the way `rppd init --sql` does, the trigger rppd_event()
// on src, one function row (JS or Python) doing the common handler, and real nodes started
// with `node bin/rppd.js start` (tests/support/rppdProcess.ts) with max_db_connections = concurrency.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { installSchema } from '../../src/db/installSchema.ts';
import { takeListenLock } from '../../src/db/queries/events.ts';
import { freePort } from '../../tests/support/pgServer.ts';
import { repoRoot, rppdBin } from '../../tests/support/rppdProcess.ts';
import { sql, withDb } from '../db.ts';
import type { BenchSystem, RunningSystem } from './system.ts';

export const RPPD_SCHEMA = 'rppd';
export const PYTHON = '/usr/bin/python3';

const JS_HANDLER = `export default async (event, ctx) => {
  if (!event.new) return; // TRUNCATE between rounds, captured from the WAL
  const startedMs = performance.timeOrigin + performance.now();
  const { rows } = await ctx.db.query('SELECT id, k, payload FROM src WHERE id = $1', [event.new.id]);
  const row = rows[0];
  if (!row) throw new Error('source row ' + event.new.id + ' not found');
  await ctx.db.query('INSERT INTO sink (src_id, k, started_ms, seq) VALUES ($1, $2, $3, $4)', [
    row.id,
    row.k,
    startedMs,
    event.eventId,
  ]);
};
`;

const PYTHON_HANDLER = `import time
started_ms = time.time() * 1000
cur = DB.cursor()
cur.execute('SELECT id, k, payload FROM src WHERE id = %s', (NEW['id'],))
row = cur.fetchone()
if row is None:
    raise RuntimeError('source row %s not found' % NEW['id'])
cur.execute('INSERT INTO sink (src_id, k, started_ms, seq) VALUES (%s, %s, %s, %s)', (row[0], row[1], started_ms, EVENT_ID))
`;

const cacheDir = mkdtempSync(join(tmpdir(), 'rppd-bench-cache-'));

/**
 * Writers NOTIFY only while a master waits for it, which it shows by holding rppd_listen_lock.
 * W1 measures the trigger both ways: this holds the lock as a waiting master would, until the
 * returned release.
 */
export async function holdListenLock(url: string): Promise<() => Promise<void>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  if (!(await takeListenLock(client, RPPD_SCHEMA))) {
    await client.end();
    throw new Error('rppd_listen_lock is taken: a node or a writer holds it');
  }
  return () => client.end();
}

export interface RppdNode {
  proc: ChildProcess;
  /** The node's HTTP API (RPPD_HTTP), for /metrics. */
  httpUrl: string;
  /** SIGTERM (a graceful stop, which also writes --cpu-prof profiles), SIGKILL after 30 s. */
  stop(): Promise<void>;
}

/**
 * `node [nodeArgs] bin/rppd.js start …` (like tests/support/rppdProcess.ts, plus node flags such
 * as --cpu-prof, which NODE_OPTIONS does not take); resolves once the node logged `waitFor`.
 */
export async function startRppdNode(
  url: string,
  name: string,
  options: { env?: Record<string, string>; nodeArgs?: string[]; waitFor?: 'master' | 'registered' } = {},
): Promise<RppdNode> {
  const port = await freePort();
  const httpPort = await freePort();
  const proc = spawn(
    process.execPath,
    [...(options.nodeArgs ?? []), rppdBin, 'start', RPPD_SCHEMA, url, `127.0.0.1:${port}`, `--name=${name}`],
    {
      cwd: repoRoot,
      env: {
        ...process.env,
        RPPD_LOG_LEVEL: process.env.RPPD_BENCH_LOG_LEVEL ?? 'info',
        RPPD_PYTHON: PYTHON,
        RPPD_CACHE_DIR: cacheDir,
        RPPD_HTTP: `127.0.0.1:${httpPort}`,
        ...options.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  // RPPD_BENCH_NODE_LOG=<dir>: each node's log in <dir>/<name>-<pid>.log, to look into a run.
  const logDir = process.env.RPPD_BENCH_NODE_LOG;
  if (logDir) {
    mkdirSync(logDir, { recursive: true });
    proc.stdout!.pipe(createWriteStream(join(logDir, `${name}-${proc.pid}.log`)));
  }
  const tail: string[] = [];
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const killOnExit = () => proc.kill('SIGKILL');
  process.once('exit', killOnExit);
  const wanted =
    options.waitFor === 'registered' ? /registered in rppd_config|master: lease acquired/ : /master: lease acquired/;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rppd node ${name} did not start:\n${tail.join('')}`)), 90_000);
    const onData = (chunk: string) => {
      tail.push(chunk);
      if (tail.length > 50) tail.shift();
      if (wanted.test(chunk)) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout!.setEncoding('utf8').on('data', onData);
    proc.stderr!.setEncoding('utf8').on('data', (c: string) => tail.push(c));
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`rppd node ${name} exited while starting:\n${tail.join('')}`));
    });
  });
  return {
    proc,
    httpUrl: `http://127.0.0.1:${httpPort}`,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
      process.off('exit', killOnExit);
    },
  };
}

export const rppd: BenchSystem = {
  name: 'rppd',
  queueTables: [`${RPPD_SCHEMA}.rppd_event_queue`, `${RPPD_SCHEMA}.rppd_event_state`],
  supportsOrdered: true,
  async install(url, options = {}) {
    await withDb(url, async (db) => {
      await installSchema(db, RPPD_SCHEMA, { mode: 'sql' });
      const lang = options.lang ?? 'js';
      await db.query(
        `INSERT INTO ${RPPD_SCHEMA}.rppd_function (code, checksum, schema_table, topic, queue, lang)
         VALUES ($1, '', 'public.src', $2, $3, $4)`,
        [lang === 'python' ? PYTHON_HANDLER : JS_HANDLER, options.ordered ? '.k' : '', !!options.ordered, lang],
      );
      if (options.capture === 'wal') {
        // Three transactions: the publication, then the slot (in a transaction that wrote nothing), then the table.
        await db.query(`SELECT ${RPPD_SCHEMA}.rppd_wal_prepare()`);
        await db.query(`SELECT ${RPPD_SCHEMA}.rppd_wal_slot()`);
        await db.query(`SELECT ${RPPD_SCHEMA}.rppd_wal_capture('src')`);
      } else {
        await db.query(
          `CREATE TRIGGER rppd_event AFTER INSERT ON src FOR EACH ROW EXECUTE FUNCTION ${RPPD_SCHEMA}.rppd_event()`,
        );
      }
    });
  },
  async start(url, options): Promise<RunningSystem> {
    await sql(url, `UPDATE ${RPPD_SCHEMA}.rppd_config SET max_db_connections = $1`, [options.concurrency]);
    const nodes: RppdNode[] = [];
    const count = options.nodes ?? 1;
    const { env, nodeArgs } = options;
    try {
      nodes.push(await startRppdNode(url, 'bench-1', { env, nodeArgs }));
      for (let i = 2; i <= count; i++) {
        nodes.push(await startRppdNode(url, `bench-${i}`, { env, nodeArgs, waitFor: 'registered' }));
      }
      // Nodes registered after the UPDATE above get the column default (10).
      await sql(url, `UPDATE ${RPPD_SCHEMA}.rppd_config SET max_db_connections = $1`, [options.concurrency]);
    } catch (err) {
      for (const n of nodes) n.proc.kill('SIGKILL');
      await Promise.all(nodes.map((n) => n.stop()));
      throw err;
    }
    return {
      pids: () => nodes.map((n) => n.proc.pid).filter((p): p is number => p !== undefined && p > 0),
      async stop() {
        await Promise.all(nodes.map((n) => n.stop()));
      },
      metrics: async () => (await fetch(`${nodes[0]!.httpUrl}/metrics`)).text(),
    };
  },
};

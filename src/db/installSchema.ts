// Installs or upgrades rppd in a schema, under an advisory lock, one transaction
// per version. Uses CREATE EXTENSION when the server has the extension files,
// the same SQL applied directly otherwise (managed PostgreSQL).
import type pg from 'pg';
import { compareVersions, latestVersion, scriptSql, upgradePath } from './extensionFiles.ts';
import { quoteIdent, quoteIdentIfNeeded } from './ident.ts';

export interface InstallResult {
  schema: string;
  mode: 'extension' | 'sql';
  from: string | null;
  to: string;
  changed: boolean;
}

export interface InstallOptions {
  /** 'auto' (default): CREATE EXTENSION when available, else plain SQL. */
  mode?: 'auto' | 'extension' | 'sql';
  /** The version to install or upgrade to (default: the newest this rppd knows; tests install older ones). */
  version?: string;
}

const quoteLiteral = (version: string) => {
  if (!/^[\d.]+$/.test(version)) throw new Error(`not an rppd version: ${version}`);
  return `'${version}'`;
};

export class SchemaTooNewError extends Error {
  override name = 'SchemaTooNewError';
}

/** Installed version in `schema`, or null. Reads rppd_schema_version() if present. */
export async function installedVersion(
  client: pg.ClientBase,
  schema: string,
): Promise<{ version: string | null; extension: boolean }> {
  const ext = await client.query<{ extversion: string }>(
    `SELECT e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'rppd' AND n.nspname = $1`,
    [schema],
  );
  if (ext.rows[0]) return { version: ext.rows[0].extversion, extension: true };
  const fn = await client.query(
    `SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = $1 AND p.proname = 'rppd_schema_version'`,
    [schema],
  );
  if (!fn.rowCount) return { version: null, extension: false };
  const v = await client.query<{ v: string }>(`SELECT ${quoteIdent(schema)}.rppd_schema_version() AS v`);
  return { version: v.rows[0]?.v ?? null, extension: false };
}

/** Throws when the schema is missing rppd or is newer than this rppd understands. */
export async function checkSchema(client: pg.ClientBase, schema: string): Promise<string | null> {
  const { version } = await installedVersion(client, schema);
  const known = latestVersion();
  if (version && compareVersions(version, known) > 0) {
    throw new SchemaTooNewError(
      `schema "${schema}" has rppd ${version}, newer than this rppd (${known}) understands: upgrade rppd`,
    );
  }
  return version;
}

export async function installSchema(
  client: pg.ClientBase,
  schema: string,
  options: InstallOptions = {},
): Promise<InstallResult> {
  const known = latestVersion();
  const target = options.version ?? known;
  if (compareVersions(target, known) > 0) throw new Error(`rppd ${target} is newer than this rppd (${known})`);
  const lockKey = `rppd install ${schema}`;
  await client.query('SELECT pg_advisory_lock(hashtext($1))', [lockKey]);
  try {
    const current = await installedVersion(client, schema);
    if (current.version && compareVersions(current.version, known) > 0) {
      throw new SchemaTooNewError(
        `schema "${schema}" has rppd ${current.version}, newer than this rppd (${known}) understands: upgrade rppd`,
      );
    }
    if (current.version && compareVersions(current.version, target) > 0) {
      throw new Error(`schema "${schema}" has rppd ${current.version}; rppd does not downgrade to ${target}`);
    }
    const mode = options.mode ?? 'auto';
    if (current.extension) {
      if (current.version !== target) {
        await client.query(`ALTER EXTENSION rppd UPDATE TO ${quoteLiteral(target)}`);
      }
      return { schema, mode: 'extension', from: current.version, to: target, changed: current.version !== target };
    }
    if (current.version === null && mode !== 'sql') {
      const available = await client.query(
        `SELECT 1 FROM pg_available_extension_versions WHERE name = 'rppd' AND version = $1`,
        [target],
      );
      if (available.rowCount) {
        await client.query('BEGIN');
        try {
          await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
          await client.query(`CREATE EXTENSION rppd VERSION ${quoteLiteral(target)} SCHEMA ${quoteIdent(schema)}`);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
        return { schema, mode: 'extension', from: null, to: target, changed: true };
      }
      if (mode === 'extension') {
        throw new Error(
          `rppd ${target} extension files are not installed on the server: run "rppd extension install" there, or use plain SQL`,
        );
      }
    }
    for (const script of upgradePath(current.version, target)) {
      await client.query('BEGIN');
      try {
        if (script.from === null) await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
        await client.query(scriptSql(script, quoteIdentIfNeeded(schema)));
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw new Error(`applying ${script.file} to schema "${schema}" failed`, { cause: err });
      }
    }
    return { schema, mode: 'sql', from: current.version, to: target, changed: current.version !== target };
  } finally {
    await client.query('SELECT pg_advisory_unlock(hashtext($1))', [lockKey]).catch(() => undefined);
  }
}

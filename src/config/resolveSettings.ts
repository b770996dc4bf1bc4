// Builds the node's Settings once at start-up. Per setting: env > args > file > default. Every value given is
// validated, even one a higher source overrides; errors name the setting and where it came from.

import { readFileSync, statSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { UsageError } from '../util/errors.ts';
import { type ArgsMode, type ArgValue, type ParsedArgs, parseArgs } from './parseArgs.ts';
import { type ConfigFile, readConfigFile } from './readConfigFile.ts';
import {
  type DbSettings,
  DEFS,
  type DefaultContext,
  deepFreeze,
  type HostPort,
  redactUrl,
  SETTING_KEYS,
  type SettingDef,
  type SettingSource,
  type Settings,
} from './settings.ts';

export interface ResolveOptions {
  /** Base of relative paths given in args or env, and of the default cache_dir. */
  cwd?: string;
  /** Default node name; os.hostname() when absent. */
  hostname?: string;
}

/** One given value of a setting, e.g. `RPPD_LEASE_MS="abc" (env)`. */
interface Candidate {
  raw: string;
  source: SettingSource;
  label: string;
  /** Relative paths are taken from here: the config file's directory for file values, else cwd. */
  baseDir: string;
}

interface Resolved<T> {
  value: T | undefined;
  source: SettingSource;
  label: string;
}

const ARG_KEYS = { schema: 'schema', url: 'url', bind: 'bind', name: 'name', log_level: 'verbose' } as const;

function given(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

function shown(def: Pick<SettingDef<unknown>, 'secret' | 'key'>, raw: string): string {
  if (def.secret) return '***';
  return `"${def.key === 'url' ? redactUrl(raw) : raw}"`;
}

function readValueFile(path: string, label: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`${label} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  if (text === '') throw new UsageError(`${label} names an empty file`);
  return text;
}

/** `NAME` or, for secrets and credentials, `NAME_FILE` naming a file that holds the value; never both. */
function envValue(env: NodeJS.ProcessEnv, name: string, withFile: boolean, cwd: string, show: (raw: string) => string) {
  const direct = given(env[name]);
  const file = withFile ? given(env[`${name}_FILE`]) : undefined;
  if (direct !== undefined && file !== undefined) {
    throw new UsageError(`both ${name} and ${name}_FILE are set (env): set one of them`);
  }
  if (direct !== undefined) return { raw: direct, label: `${name}=${show(direct)} (env)` };
  if (file !== undefined) {
    const label = `${name}_FILE="${file}" (env)`;
    return { raw: readValueFile(resolve(cwd, file), label), label };
  }
  return undefined;
}

function makeResolver(args: ParsedArgs, file: ConfigFile | undefined, env: NodeJS.ProcessEnv, cwd: string) {
  const warnings: string[] = [...(file?.warnings ?? [])];
  const sources: Record<string, SettingSource> = {};

  function candidates(def: SettingDef<unknown>): Candidate[] {
    const found: Candidate[] = [];
    for (const name of def.env) {
      const hit = envValue(env, name, def.secret === true, cwd, (raw) => shown(def, raw));
      if (hit) {
        found.push({ ...hit, source: 'env', baseDir: cwd });
        break;
      }
    }
    const argKey = ARG_KEYS[def.key as keyof typeof ARG_KEYS] as keyof ParsedArgs | undefined;
    const arg: ArgValue | undefined = argKey ? args[argKey] : undefined;
    if (arg) found.push({ raw: arg.value, source: 'args', label: arg.label, baseDir: cwd });
    if (file) {
      const entry = file.entries.get(def.key);
      const fileEntry = def.secret ? file.entries.get(`${def.key}_file`) : undefined;
      const where = (line: number) => `(config file ${file.path} line ${line})`;
      if (entry && fileEntry) {
        throw new UsageError(`both ${def.key} and ${def.key}_file are set ${where(fileEntry.line)}: set one of them`);
      }
      const baseDir = dirname(file.path);
      if (entry) {
        found.push({
          raw: entry.value,
          source: 'file',
          label: `${def.key}=${shown(def, entry.value)} ${where(entry.line)}`,
          baseDir,
        });
      } else if (fileEntry) {
        const label = `${def.key}_file="${fileEntry.value}" ${where(fileEntry.line)}`;
        found.push({ raw: readValueFile(resolve(baseDir, fileEntry.value), label), source: 'file', label, baseDir });
      }
    }
    return found;
  }

  function get<T>(def: SettingDef<T>, ctx: DefaultContext): Resolved<T> {
    const found = candidates(def as SettingDef<unknown>);
    const values = found.map((c) => {
      const result = def.parse.safeParse(c.raw);
      if (!result.success) throw new UsageError(`${c.label} ${result.error.issues[0]?.message ?? 'is not valid'}`);
      return result.data;
    });
    const winner = found[0];
    const overriddenArg = found.find((c, i) => i > 0 && c.source === 'args');
    if (winner && overriddenArg) warnings.push(`${overriddenArg.label} is overridden by ${winner.label}`);
    if (!winner) {
      const value = def.default(ctx);
      sources[def.key] = 'default';
      const text = typeof value === 'object' ? (value as HostPort).text : value;
      return { value, source: 'default', label: `${def.key}=${def.secret ? '***' : text} (default)` };
    }
    let value = values[0] as T;
    if (def.path && typeof value === 'string' && (def.path !== 'command' || /[/\\]/.test(value))) {
      const absolute = resolve(winner.baseDir, value);
      if (def.path === 'file' && !statSync(absolute, { throwIfNoEntry: false })?.isFile()) {
        throw new UsageError(`${winner.label} names no file (${absolute})`);
      }
      value = absolute as T;
    }
    sources[def.key] = winner.source;
    return { value, source: winner.source, label: winner.label };
  }

  return { get, warnings, sources };
}

/** Sources in the order of the settings table, the URL's credentials right after the URL. */
function ordered(sources: Record<string, SettingSource>): Record<string, SettingSource> {
  const keys = SETTING_KEYS.flatMap((key): string[] => (key === 'url' ? [key, 'user', 'password'] : [key]));
  return Object.fromEntries(keys.filter((key) => sources[key] !== undefined).map((key) => [key, sources[key]!]));
}

/** PGUSER / PGPASSWORD (or their _FILE forms) replace the URL's user / password; the URL keeps the rest. */
function applyCredentials(urlText: string, user: string | undefined, password: string | undefined): string {
  const url = new URL(urlText);
  // postgres:///db?host=/socket has no host, so no userinfo: pg takes user/password from the query instead.
  if (url.host === '') {
    if (user !== undefined) url.searchParams.set('user', user);
    if (password !== undefined) url.searchParams.set('password', password);
  } else {
    if (user !== undefined) url.username = encodeURIComponent(user);
    if (password !== undefined) url.password = encodeURIComponent(password);
  }
  return url.toString();
}

function resolveDb(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  opts: ResolveOptions,
  mode: ArgsMode,
): { db: DbSettings; resolver: ReturnType<typeof makeResolver>; args: ParsedArgs; cwd: string; ctx: DefaultContext } {
  const cwd = resolve(opts.cwd ?? process.cwd());
  const args = parseArgs(argv, { cwd, mode });
  const file = args.configFile ? readConfigFile(args.configFile.value, args.configFile.label) : undefined;
  const resolver = makeResolver(args, file, env, cwd);

  const pgUser = envValue(env, 'PGUSER', true, cwd, (raw) => `"${raw}"`);
  const pgPassword = envValue(env, 'PGPASSWORD', true, cwd, () => '***');
  const ctx: DefaultContext = {
    cwd,
    hostname: opts.hostname ?? osHostname(),
    user: pgUser?.raw ?? given(env.USER) ?? 'postgres',
  };

  const schema = resolver.get(DEFS.schema, ctx);
  const url = resolver.get(DEFS.url, ctx);
  const logLevel = resolver.get(DEFS.log_level, ctx);
  const effective = applyCredentials(url.value!, pgUser?.raw, pgPassword?.raw);
  const parsed = new URL(effective);
  const { sources } = resolver;
  if (pgUser) sources.user = 'env';
  else if (parsed.username || parsed.searchParams.has('user')) sources.user = url.source;
  if (pgPassword) sources.password = 'env';
  else if (parsed.password || parsed.searchParams.has('password')) sources.password = url.source;

  const db: DbSettings = {
    schema: schema.value!,
    url: effective,
    urlRedacted: redactUrl(effective),
    verbose: args.verbose !== undefined,
    logLevel: logLevel.value!,
    configFile: file?.path,
    sources: ordered(sources),
    warnings: resolver.warnings,
  };
  return { db, resolver, args, cwd, ctx };
}

/**
 * Settings of `rppd start`. Pure apart from reading the config file and the files named by *_FILE variables;
 * throws UsageError naming the argument or setting and its source.
 */
export function resolveSettings(argv: readonly string[], env: NodeJS.ProcessEnv, opts: ResolveOptions = {}): Settings {
  const { db, resolver, ctx } = resolveDb(argv, env, opts, 'node');
  const get = <T>(def: SettingDef<T>) => resolver.get(def, ctx);

  const bind = get(DEFS.bind);
  const http = get(DEFS.http);
  const leaseMs = get(DEFS.lease_ms);
  const heartbeatMs = get(DEFS.heartbeat_ms);
  const tlsCert = get(DEFS.tls_cert);
  const tlsKey = get(DEFS.tls_key);
  const tlsCa = get(DEFS.tls_ca);
  const secret = get(DEFS.secret);

  if (heartbeatMs.value! >= leaseMs.value!) {
    throw new UsageError(
      `${heartbeatMs.label} must be less than ${leaseMs.label}: the lease would lapse between heartbeats`,
    );
  }
  if ((tlsCert.value === undefined) !== (tlsKey.value === undefined)) {
    const [set, missing] = tlsCert.value === undefined ? [tlsKey, 'tls_cert'] : [tlsCert, 'tls_key'];
    throw new UsageError(`${set.label} is set but ${missing} is not: TLS needs both`);
  }
  if (tlsCa.value !== undefined && tlsCert.value === undefined) {
    throw new UsageError(`${tlsCa.label} is set but tls_cert and tls_key are not: TLS needs both`);
  }
  if (http.value && http.value.text === bind.value!.text) {
    throw new UsageError(`${http.label} is the same host:port as ${bind.label}`);
  }
  if (secret.value !== undefined && secret.value.length < 16) {
    resolver.warnings.push(`${secret.label} is shorter than 16 characters: easy to guess`);
  }

  const settings: Settings = {
    ...db,
    bind: bind.value!,
    name: get(DEFS.name).value!,
    python: get(DEFS.python).value,
    cacheDir: get(DEFS.cache_dir).value!,
    outputLimitBytes: get(DEFS.output_limit_bytes).value!,
    memoryLimitMb: get(DEFS.memory_limit_mb).value!,
    prepareThreshold: get(DEFS.prepare_threshold).value!,
    runAhead: get(DEFS.run_ahead).value!,
    leaseMs: leaseMs.value!,
    heartbeatMs: heartbeatMs.value!,
    pollMs: get(DEFS.poll_ms).value!,
    secret: secret.value,
    tls: tlsCert.value === undefined ? undefined : { cert: tlsCert.value, key: tlsKey.value!, ca: tlsCa.value },
    http: http.value,
    shutdownGraceMs: get(DEFS.shutdown_grace_ms).value!,
    maxAttempts: get(DEFS.max_attempts).value!,
    spreadCpuIdle: get(DEFS.spread_cpu_idle).value!,
    sources: ordered(resolver.sources),
  };
  return deepFreeze(dropUndefined(settings));
}

/** Settings of `rppd init [schema] [url] [config file]`: same rules, database only. */
export function parseDbArgs(argv: readonly string[], env: NodeJS.ProcessEnv, opts: ResolveOptions = {}): DbSettings {
  return deepFreeze(dropUndefined(resolveDb(argv, env, opts, 'db').db));
}

/** Optional settings are absent, not `undefined`, so `'python' in settings` and printing behave. */
function dropUndefined<T extends object>(value: T): T {
  for (const [key, inner] of Object.entries(value)) {
    if (inner === undefined) delete (value as Record<string, unknown>)[key];
    else if (inner && typeof inner === 'object' && !Array.isArray(inner)) dropUndefined(inner);
  }
  return value;
}

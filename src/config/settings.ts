// The node's settings: one table of every setting (file key, env names, validation, default), the frozen
// Settings type built from it, and the host:port parser. Documented in docs/configuration.md and in usage.ts.

import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';

export type SettingSource = 'env' | 'args' | 'file' | 'default';

export interface HostPort {
  /** As given to listen()/connect(): IPv6 without brackets, e.g. `::1`. */
  readonly host: string;
  readonly port: number;
  /** `host:port` as stored in rppd_config.host, IPv6 in brackets, e.g. `[::1]:8881`. */
  readonly text: string;
}

export interface Settings {
  /** Postgres schema holding rppd's tables. */
  readonly schema: string;
  /** Effective connection URL, with the credentials (PGUSER/PGPASSWORD applied). Never log it: use urlRedacted. */
  readonly url: string;
  readonly urlRedacted: string;
  /** Where this node's RPC server listens; `text` is what other nodes connect to. */
  readonly bind: HostPort;
  /** rppd_config.host_name. */
  readonly name: string;
  /** `--verbose` was given. */
  readonly verbose: boolean;
  readonly logLevel: LogLevel;
  /** Absolute path of the config file that was read, if any. */
  readonly configFile?: string;
  readonly python?: string;
  readonly cacheDir: string;
  readonly outputLimitBytes: number;
  readonly memoryLimitMb: number;
  /** ctx.db.query prepares a statement its connection has run this many times (0: never). */
  readonly prepareThreshold: number;
  /** JS runs sent ahead to a worker thread per run slot, started there as a slot frees (0: none). */
  readonly runAhead: number;
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  readonly pollMs: number;
  /** Node-to-node shared secret. */
  readonly secret?: string;
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca?: string };
  readonly http?: { readonly host: string; readonly port: number };
  readonly shutdownGraceMs: number;
  readonly maxAttempts: number;
  /** Percent of idle host CPU a node needs to be given runs the master could keep (0: no check). */
  readonly spreadCpuIdle: number;
  /**
   * Where each setting came from, keyed by the name users write in a config file (`lease_ms`, `url`, …), plus
   * `user` and `password` for the URL's credentials when it has them.
   */
  readonly sources: Readonly<Record<string, SettingSource>>;
  readonly warnings: readonly string[];
}

/** What rppd init needs: the database only. */
export type DbSettings = Pick<
  Settings,
  'schema' | 'url' | 'urlRedacted' | 'verbose' | 'logLevel' | 'configFile' | 'sources' | 'warnings'
>;

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const DEFAULT_PORT = 8881;
/** rppd_config.host and host_name are varchar(64). */
export const MAX_NODE_TEXT = 64;
/** setTimeout's limit; every *_ms setting is used as a timer. */
const MAX_MS = 2_147_483_647;

/** What the defaults depend on. */
export interface DefaultContext {
  cwd: string;
  hostname: string;
  /** PGUSER, else $USER, else `postgres`. */
  user: string;
}

/** How a setting's value relates to the file system: paths are made absolute (file values: relative to the file). */
export type PathKind = 'dir' | 'file' | 'command';

export interface SettingDef<T> {
  /** Key in a config file, and in `Settings.sources`. */
  key: string;
  /** Environment variables, the first one set wins (`RPPD_<KEY>` unless listed). */
  env: readonly string[];
  parse: z.ZodType<T, string>;
  default: (ctx: DefaultContext) => T | undefined;
  /** Shown in usage and docs. */
  defaultText: string;
  doc: string;
  /** Never printed; also read from `<ENV>_FILE` / `<key>_file` naming a file that holds the value. */
  secret?: boolean;
  path?: PathKind;
}

function def<T>(d: Omit<SettingDef<T>, 'env'> & { env?: readonly string[] }): SettingDef<T> {
  return { ...d, env: d.env ?? [`RPPD_${d.key.toUpperCase()}`] };
}

function integer(min: number, max: number): z.ZodType<number, string> {
  return z
    .string()
    .trim()
    .regex(/^-?\d+(\.\d+)?$/, 'is not a number')
    .transform(Number)
    .pipe(
      z.number().int('is not a whole number').min(min, `must be at least ${min}`).max(max, `must be at most ${max}`),
    );
}

function nonEmpty(max?: number): z.ZodType<string, string> {
  const base = z.string().trim().min(1, 'is empty');
  return max === undefined ? base : base.max(max, `is longer than ${max} characters`);
}

/** `host:port`, `:port`, `[v6]:port`; without a port when defaultPort is given. Returns the problem as a string. */
export function parseHostPort(input: string, defaultPort?: number): HostPort | string {
  const text = input.trim();
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
    if (!isIPv6(host)) return 'is not an IPv6 address in brackets';
  } else if (text.startsWith('[')) {
    return 'has an unclosed "["';
  } else {
    const colons = text.split(':').length - 1;
    if (colons > 1) return 'looks like an IPv6 address: write it in brackets, e.g. [::1]:8881';
    if (colons === 0 && /^\d+$/.test(text)) return `is a bare number: write a port as ":${text}"`;
    [host, portText] = colons === 1 ? [text.slice(0, text.indexOf(':')), text.slice(text.indexOf(':') + 1)] : [text];
    if (host === '') host = 'localhost';
    else if (/^[\d.]+$/.test(host)) {
      if (!isIPv4(host)) return `has "${host}", which is not an IPv4 address`;
    } else if (
      !/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(host)
    ) {
      return `has "${host}", which is not a host name`;
    }
  }
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return 'has no port: write host:port';
    port = defaultPort;
  } else {
    if (!/^\d+$/.test(portText)) return `has port "${portText}", which is not a number`;
    port = Number(portText);
    if (port < 1 || port > 65535) return `has port ${portText}, outside 1-65535`;
  }
  const joined = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (joined.length > MAX_NODE_TEXT) return `is longer than ${MAX_NODE_TEXT} characters`;
  return { host, port, text: joined };
}

function hostPort(defaultPort?: number): z.ZodType<HostPort, string> {
  return z.string().transform((value, ctx) => {
    const parsed = parseHostPort(value, defaultPort);
    if (typeof parsed === 'string') {
      ctx.addIssue({ code: 'custom', message: parsed });
      return z.NEVER;
    }
    return parsed;
  });
}

/** `rppd` or `rppd.` (the original's form) → `rppd`. */
export const schemaName = z
  .string()
  .trim()
  .refine((s) => s.split('.').length <= 2, "has more than one '.'")
  .regex(
    /^[A-Za-z_][A-Za-z0-9_$]*\.?$/,
    "is not a schema name (letters, digits, _ and $, not starting with a digit; a trailing '.' is allowed)",
  )
  .transform((s) => (s.endsWith('.') ? s.slice(0, -1) : s))
  .pipe(z.string().max(63, 'is longer than 63 characters (a Postgres name)'));

export const postgresUrl = z
  .string()
  .trim()
  .regex(/^postgres(ql)?:\/\//i, 'does not start with postgres:// or postgresql://')
  .refine((s) => URL.canParse(s), 'is not a valid URL')
  .refine((s) => {
    if (!URL.canParse(s)) return true;
    const u = new URL(s);
    try {
      decodeURIComponent(u.username);
      decodeURIComponent(u.password);
      return true;
    } catch {
      return false;
    }
  }, 'has a user or password that is not URL-encoded (write % as %25)');

export const DEFS = {
  schema: def<string>({
    key: 'schema',
    parse: schemaName,
    default: () => 'public',
    defaultText: 'public',
    doc: "schema of rppd's tables",
  }),
  url: def<string>({
    key: 'url',
    env: ['RPPD_URL', 'DATABASE_URL'],
    parse: postgresUrl,
    default: ({ user }) => `postgres://${encodeURIComponent(user)}@localhost:5432/${encodeURIComponent(user)}`,
    defaultText: 'postgres://<user>@localhost:5432/<user>',
    doc: 'database URL',
  }),
  bind: def<HostPort>({
    key: 'bind',
    parse: hostPort(DEFAULT_PORT),
    default: () => ({ host: 'localhost', port: DEFAULT_PORT, text: `localhost:${DEFAULT_PORT}` }),
    defaultText: `localhost:${DEFAULT_PORT}`,
    doc: 'host:port of this node for other nodes',
  }),
  name: def<string>({
    key: 'name',
    parse: nonEmpty(MAX_NODE_TEXT),
    default: ({ hostname }) => hostname.slice(0, MAX_NODE_TEXT) || 'localhost',
    defaultText: 'the host name',
    doc: 'node name (rppd_config.host_name)',
  }),
  log_level: def<LogLevel>({
    key: 'log_level',
    parse: z
      .string()
      .trim()
      .toLowerCase()
      .pipe(z.enum(LOG_LEVELS, { error: `is not one of ${LOG_LEVELS.join(', ')}` })),
    default: () => 'info',
    defaultText: 'info (debug with --verbose)',
    doc: 'log level',
  }),
  python: def<string>({
    key: 'python',
    parse: nonEmpty(),
    default: () => undefined,
    defaultText: 'python3 on PATH',
    doc: 'Python interpreter',
    path: 'command',
  }),
  cache_dir: def<string>({
    key: 'cache_dir',
    parse: nonEmpty(),
    default: ({ cwd }) => `${cwd}/.rppd/cache`,
    defaultText: '<cwd>/.rppd/cache',
    doc: 'compiled-code cache',
    path: 'dir',
  }),
  output_limit_bytes: def<number>({
    key: 'output_limit_bytes',
    parse: integer(1, 1024 ** 3),
    default: () => 1_048_576,
    defaultText: '1048576',
    doc: "a run's captured output is cut at this size",
  }),
  memory_limit_mb: def<number>({
    key: 'memory_limit_mb',
    parse: integer(16, 1024 * 1024),
    default: () => 512,
    defaultText: '512',
    doc: 'memory limit of one runtime worker',
  }),
  prepare_threshold: def<number>({
    key: 'prepare_threshold',
    parse: integer(0, 1_000_000),
    default: () => 5,
    defaultText: '5',
    doc: "a JS function's ctx.db.query prepares a statement its connection has run this many times (0: never), as psycopg 3 does",
  }),
  run_ahead: def<number>({
    key: 'run_ahead',
    parse: integer(0, 1),
    default: () => 1,
    defaultText: '1',
    doc: 'JS runs a busy worker thread is sent ahead per run slot, to start as a slot frees (0: none)',
  }),
  lease_ms: def<number>({
    key: 'lease_ms',
    parse: integer(1, MAX_MS),
    // With heartbeat_ms 1000 a killed master is replaced 3-4 s later (docs/cluster.md).
    default: () => 4000,
    defaultText: '4000',
    doc: 'master lease; lost when not renewed in time',
  }),
  heartbeat_ms: def<number>({
    key: 'heartbeat_ms',
    parse: integer(1, MAX_MS),
    default: () => 1000,
    defaultText: '1000',
    doc: 'heartbeat and lease renewal interval; less than lease_ms',
  }),
  poll_ms: def<number>({
    key: 'poll_ms',
    parse: integer(1, MAX_MS),
    default: () => 500,
    defaultText: '500',
    doc: 'fallback poll interval when no NOTIFY arrives',
  }),
  secret: def<string>({
    key: 'secret',
    parse: nonEmpty(),
    default: () => undefined,
    defaultText: 'none',
    doc: 'node-to-node shared secret',
    secret: true,
  }),
  tls_cert: def<string>({
    key: 'tls_cert',
    parse: nonEmpty(),
    default: () => undefined,
    defaultText: 'none',
    doc: 'node-to-node TLS certificate (PEM path)',
    path: 'file',
  }),
  tls_key: def<string>({
    key: 'tls_key',
    parse: nonEmpty(),
    default: () => undefined,
    defaultText: 'none',
    doc: 'its private key (PEM path)',
    path: 'file',
  }),
  tls_ca: def<string>({
    key: 'tls_ca',
    parse: nonEmpty(),
    default: () => undefined,
    defaultText: 'none',
    doc: 'CA that signs the nodes (PEM path)',
    path: 'file',
  }),
  http: def<HostPort>({
    key: 'http',
    parse: hostPort(),
    default: () => undefined,
    defaultText: 'none (off)',
    doc: 'host:port of the HTTP API and metrics',
  }),
  shutdown_grace_ms: def<number>({
    key: 'shutdown_grace_ms',
    parse: integer(0, MAX_MS),
    default: () => 10_000,
    defaultText: '10000',
    doc: 'how long running functions get to finish on shutdown',
  }),
  spread_cpu_idle: def<number>({
    key: 'spread_cpu_idle',
    parse: integer(0, 100),
    default: () => 20,
    defaultText: '20',
    doc: "the master's runs beyond half its slots go to a node only while its host's CPU is more than this % idle (0: always)",
  }),
  max_attempts: def<number>({
    key: 'max_attempts',
    parse: integer(1, 1000),
    default: () => 10,
    defaultText: '10',
    doc: 'tries of a transiently failing run before it is recorded failed',
  }),
} as const;

export type SettingKey = keyof typeof DEFS;
export const SETTING_KEYS = Object.keys(DEFS) as SettingKey[];

export function isSettingKey(key: string): key is SettingKey {
  return Object.hasOwn(DEFS, key);
}

/** Password in a URL (userinfo or ?password=) → `***`; works on strings that do not parse, too. */
export function redactUrl(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]*:)[^@/?#]*@/i, '$1***@')
    .replace(/([?&]password=)[^&#]*/i, '$1***');
}

export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

/** One line per setting, `key = value (source)`, secrets hidden: what `rppd start --verbose` prints. */
export function describeSettings(settings: Settings | DbSettings): string[] {
  const s = settings as Partial<Settings>;
  const shown: Record<string, unknown> = {
    schema: s.schema,
    url: s.urlRedacted,
    bind: s.bind?.text,
    name: s.name,
    log_level: s.logLevel,
    python: s.python,
    cache_dir: s.cacheDir,
    output_limit_bytes: s.outputLimitBytes,
    memory_limit_mb: s.memoryLimitMb,
    prepare_threshold: s.prepareThreshold,
    run_ahead: s.runAhead,
    lease_ms: s.leaseMs,
    heartbeat_ms: s.heartbeatMs,
    poll_ms: s.pollMs,
    secret: s.secret === undefined ? undefined : '***',
    tls_cert: s.tls?.cert,
    tls_key: s.tls?.key,
    tls_ca: s.tls?.ca,
    http: s.http ? `${s.http.host}:${s.http.port}` : undefined,
    shutdown_grace_ms: s.shutdownGraceMs,
    max_attempts: s.maxAttempts,
    spread_cpu_idle: s.spreadCpuIdle,
  };
  const lines: string[] = [];
  for (const [key, source] of Object.entries(settings.sources)) {
    if (key === 'user' || key === 'password' || !(key in shown)) continue;
    lines.push(`${key} = ${shown[key] ?? '(none)'} (${source})`);
  }
  if (settings.configFile) lines.push(`config file: ${settings.configFile}`);
  return lines;
}

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseDbArgs, resolveSettings } from '../../src/config/resolveSettings.ts';
import { describeSettings } from '../../src/config/settings.ts';
import { usage } from '../../src/config/usage.ts';
import { UsageError } from '../../src/util/errors.ts';

const cwd = mkdtempSync(join(tmpdir(), 'rppd-settings-'));
after(() => rmSync(cwd, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const path = join(cwd, name);
  writeFileSync(path, text);
  return path;
}

const resolveIn = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
  resolveSettings(argv, env, { cwd, hostname: 'host-1' });
const usageError = (pattern: RegExp) => (err: unknown) => err instanceof UsageError && pattern.test(err.message);

describe('resolveSettings positionals', () => {
  test('any order, schema trailing dot stripped', () => {
    const s = resolveIn([':8882', 'rppd.', 'postgresql://app@db:5433/prod']);
    assert.equal(s.schema, 'rppd');
    assert.equal(s.url, 'postgresql://app@db:5433/prod');
    assert.deepEqual(s.bind, { host: 'localhost', port: 8882, text: 'localhost:8882' });
  });

  test('binds: IPv4, IPv6 in brackets, host name', () => {
    assert.deepEqual(resolveIn(['127.0.0.1:9000']).bind, { host: '127.0.0.1', port: 9000, text: '127.0.0.1:9000' });
    assert.deepEqual(resolveIn(['[::1]:9001']).bind, { host: '::1', port: 9001, text: '[::1]:9001' });
    assert.deepEqual(resolveIn(['node-2.internal:9002']).bind, {
      host: 'node-2.internal',
      port: 9002,
      text: 'node-2.internal:9002',
    });
  });

  test('bad binds name the argument and the problem', () => {
    assert.throws(() => resolveIn(['h:0']), usageError(/^bind "h:0" \(argument 1\) has port 0, outside 1-65535$/));
    assert.throws(() => resolveIn(['rppd', 'h:65536']), usageError(/bind "h:65536" \(argument 2\) has port 65536/));
    assert.throws(() => resolveIn(['h:http']), usageError(/has port "http", which is not a number/));
    assert.throws(() => resolveIn(['::1']), usageError(/write it in brackets/));
    assert.throws(() => resolveIn(['[nope]:1']), usageError(/not an IPv6 address/));
    assert.throws(() => resolveIn(['300.1.1.1:80']), usageError(/not an IPv4 address/));
    assert.throws(() => resolveIn(['bad_host!:80']), usageError(/not a host name/));
  });

  test('schemas: more than one dot, or not a name', () => {
    assert.throws(() => resolveIn(['a.b.']), usageError(/^schema "a\.b\." \(argument 1\) has more than one '\.'$/));
    assert.throws(() => resolveIn(['a.b']), usageError(/schema "a\.b" \(argument 1\) is not a schema name/));
    assert.throws(() => resolveIn(['1abc']), usageError(/is not a schema name/));
  });

  test('a bad URL is named', () => {
    assert.throws(
      () => resolveIn(['postgres://h:99999/db']),
      usageError(/^url "postgres:\/\/h:99999\/db" \(argument 1\) is not a valid URL$/),
    );
    assert.throws(
      () => resolveIn([], { RPPD_URL: 'mysql://h/db' }),
      usageError(/RPPD_URL="mysql:\/\/h\/db" \(env\) does not start with postgres:\/\//),
    );
    assert.throws(() => resolveIn(['postgres://u:50%@h/db']), usageError(/not URL-encoded/));
    assert.throws(
      () => resolveIn([], { DATABASE_URL: 'postgres://u:hunter2@h:0x/db' }),
      usageError(/^DATABASE_URL="postgres:\/\/u:\*\*\*@h:0x\/db" \(env\) is not a valid URL$/),
    );
  });

  test('a URL without a user is fine', () => {
    assert.equal(resolveIn(['postgres://db:5432/app']).url, 'postgres://db:5432/app');
  });
});

describe('resolveSettings credentials', () => {
  test('PGUSER/PGPASSWORD replace the URL credentials, URL-encoded', () => {
    const s = resolveIn(['postgres://old:oldpw@db:5432/app?sslmode=require'], {
      PGUSER: 'ann@corp',
      PGPASSWORD: 'p@ss:w/rd%?#',
    });
    const url = new URL(s.url);
    assert.equal(decodeURIComponent(url.username), 'ann@corp');
    assert.equal(decodeURIComponent(url.password), 'p@ss:w/rd%?#');
    assert.equal(url.host, 'db:5432');
    assert.equal(url.pathname, '/app');
    assert.equal(url.searchParams.get('sslmode'), 'require');
    assert.equal(s.sources.user, 'env');
    assert.equal(s.sources.password, 'env');
  });

  test('PGPASSWORD alone keeps the URL user', () => {
    const s = resolveIn(['postgres://bob@db/app'], { PGPASSWORD: 'pw' });
    assert.equal(s.url, 'postgres://bob:pw@db/app');
    assert.equal(s.sources.user, 'args');
    assert.equal(s.sources.password, 'env');
  });

  test('a socket URL without a host gets the credentials as query parameters', () => {
    const s = resolveIn(['postgres:///app?host=/var/run/postgresql'], { PGUSER: 'u', PGPASSWORD: 'p&q' });
    const url = new URL(s.url);
    assert.equal(url.searchParams.get('user'), 'u');
    assert.equal(url.searchParams.get('password'), 'p&q');
    assert.equal(url.searchParams.get('host'), '/var/run/postgresql');
    assert.doesNotMatch(s.urlRedacted, /p%26q|p&q/);
  });

  test('*_FILE variants: the trimmed content of the named file', () => {
    const user = write('pguser', 'carol\n');
    const password = write('pgpassword', '  s3 cret\n');
    const s = resolveIn(['postgres://db/app'], { PGUSER_FILE: user, PGPASSWORD_FILE: 'pgpassword' });
    assert.equal(s.url, 'postgres://carol:s3%20cret@db/app');
    assert.equal(password, join(cwd, 'pgpassword'));
  });

  test('a variable and its _FILE form together are an error', () => {
    assert.throws(
      () => resolveIn([], { PGPASSWORD: 'a', PGPASSWORD_FILE: 'x' }),
      usageError(/both PGPASSWORD and PGPASSWORD_FILE are set \(env\)/),
    );
  });

  test('a missing or empty _FILE is named', () => {
    assert.throws(
      () => resolveIn([], { PGUSER_FILE: 'nope' }),
      usageError(/^PGUSER_FILE="nope" \(env\) cannot be read/),
    );
    write('empty', '\n');
    assert.throws(
      () => resolveIn([], { PGPASSWORD_FILE: 'empty' }),
      usageError(/PGPASSWORD_FILE="empty" \(env\) names an empty file/),
    );
  });

  test('PGUSER set does not swallow arguments (the original consumed every argument while PGUSER was set)', () => {
    const s = resolveIn(['rppd', 'postgres://app@db/prod', 'node-1:9000', '--name=n1'], {
      PGUSER: 'dave',
      PGPASSWORD: 'x',
    });
    assert.equal(s.schema, 'rppd');
    assert.equal(s.bind.text, 'node-1:9000');
    assert.equal(s.name, 'n1');
    assert.equal(s.url, 'postgres://dave:x@db/prod');
    assert.equal(s.sources.schema, 'args');
  });

  test('default URL: PGUSER, else $USER, else postgres', () => {
    assert.equal(
      resolveIn([], { PGUSER: 'pg user', USER: 'unix' }).url,
      'postgres://pg%20user@localhost:5432/pg%20user',
    );
    assert.equal(resolveIn([], { USER: 'unix' }).url, 'postgres://unix@localhost:5432/unix');
    assert.equal(resolveIn([], {}).url, 'postgres://postgres@localhost:5432/postgres');
  });

  test('redaction hides the password and keeps the rest', () => {
    const s = resolveIn(['postgres://u:secret@db:5432/app'], {});
    assert.equal(s.url, 'postgres://u:secret@db:5432/app');
    assert.equal(s.urlRedacted, 'postgres://u:***@db:5432/app');
    assert.equal(resolveIn(['postgres://u@db/app']).urlRedacted, 'postgres://u@db/app');
  });
});

describe('resolveSettings config file', () => {
  test('a directory holding rppd.rppd_config', () => {
    const dir = join(cwd, 'etc-rppd');
    mkdirSync(dir);
    writeFileSync(join(dir, 'rppd.rppd_config'), '[rppd]\nschema = from_dir\nbind = :7000\n');
    const s = resolveIn([dir]);
    assert.equal(s.schema, 'from_dir');
    assert.equal(s.bind.port, 7000);
    assert.equal(s.configFile, join(dir, 'rppd.rppd_config'));
  });

  test('extended settings from a file; unknown keys become warnings', () => {
    const path = write('ext.conf', 'lease_ms = 9000\nheartbeat_ms: 2000\nmax_attempts = 3\nfavourite = tea\n');
    const s = resolveIn(['--config=ext.conf']);
    assert.equal(s.leaseMs, 9000);
    assert.equal(s.heartbeatMs, 2000);
    assert.equal(s.maxAttempts, 3);
    assert.deepEqual(s.warnings, [`config file ${path} line 4: unknown key "favourite" ignored`]);
  });

  test('relative paths in a file are relative to the file; in env, to cwd', () => {
    const dir = join(cwd, 'conf');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'node.crt'), 'cert');
    writeFileSync(join(dir, 'node.key'), 'key');
    writeFileSync(join(dir, 'rppd.rppd_config'), 'tls_cert = node.crt\ntls_key = node.key\ncache_dir = cache\n');
    const s = resolveIn([dir], { RPPD_PYTHON: 'venv/bin/python' });
    assert.deepEqual(s.tls, { cert: join(dir, 'node.crt'), key: join(dir, 'node.key') });
    assert.equal(s.cacheDir, join(dir, 'cache'));
    assert.equal(s.python, join(cwd, 'venv/bin/python'));
    assert.equal(resolveIn([], { RPPD_PYTHON: 'python3.12' }).python, 'python3.12');
  });

  test('a bad file value names the file and line', () => {
    const path = write('bad.conf', 'schema = rppd\nlease_ms = soon\n');
    assert.throws(
      () => resolveIn([path]),
      usageError(new RegExp(`^lease_ms="soon" \\(config file ${path} line 2\\) is not a number$`)),
    );
  });

  test('a value overridden by env is still validated', () => {
    const path = write('shadowed.conf', 'poll_ms = -5\n');
    assert.throws(
      () => resolveIn([path], { RPPD_POLL_MS: '100' }),
      usageError(/poll_ms="-5" \(config file .*\) must be at least 1/),
    );
  });
});

describe('resolveSettings extended settings', () => {
  test('defaults', () => {
    const s = resolveIn([]);
    assert.equal(s.schema, 'public');
    assert.equal(s.name, 'host-1');
    assert.equal(s.cacheDir, join(cwd, '.rppd', 'cache'));
    assert.equal(s.outputLimitBytes, 1048576);
    assert.equal(s.memoryLimitMb, 512);
    assert.equal(s.leaseMs, 4000);
    assert.equal(s.heartbeatMs, 1000);
    assert.equal(s.pollMs, 500);
    assert.equal(s.shutdownGraceMs, 10000);
    assert.equal(s.maxAttempts, 10);
    assert.equal(s.logLevel, 'info');
    assert.equal(s.verbose, false);
    for (const key of ['python', 'secret', 'tls', 'http', 'configFile'] as const) assert.equal(key in s, false, key);
  });

  test('env values are parsed', () => {
    const s = resolveIn([], {
      RPPD_OUTPUT_LIMIT_BYTES: '2048',
      RPPD_MEMORY_LIMIT_MB: '256',
      RPPD_POLL_MS: '250',
      RPPD_SHUTDOWN_GRACE_MS: '0',
      RPPD_HTTP: '0.0.0.0:8080',
      RPPD_LOG_LEVEL: 'WARN',
    });
    assert.equal(s.outputLimitBytes, 2048);
    assert.equal(s.memoryLimitMb, 256);
    assert.equal(s.pollMs, 250);
    assert.equal(s.shutdownGraceMs, 0);
    assert.deepEqual({ host: s.http?.host, port: s.http?.port }, { host: '0.0.0.0', port: 8080 });
    assert.equal(s.logLevel, 'warn');
    assert.equal(s.sources.http, 'env');
  });

  const errors: [Record<string, string>, RegExp][] = [
    [{ RPPD_LEASE_MS: 'abc' }, /^RPPD_LEASE_MS="abc" \(env\) is not a number$/],
    [{ RPPD_HEARTBEAT_MS: '1.5' }, /^RPPD_HEARTBEAT_MS="1\.5" \(env\) is not a whole number$/],
    [{ RPPD_MAX_ATTEMPTS: '0' }, /^RPPD_MAX_ATTEMPTS="0" \(env\) must be at least 1$/],
    [{ RPPD_MEMORY_LIMIT_MB: '4' }, /^RPPD_MEMORY_LIMIT_MB="4" \(env\) must be at least 16$/],
    [{ RPPD_LOG_LEVEL: 'loud' }, /^RPPD_LOG_LEVEL="loud" \(env\) is not one of trace, debug/],
    [{ RPPD_HTTP: '8080' }, /^RPPD_HTTP="8080" \(env\) is a bare number: write a port as ":8080"$/],
    [{ RPPD_HTTP: 'localhost' }, /^RPPD_HTTP="localhost" \(env\) has no port/],
    [{ RPPD_NAME: 'n'.repeat(65) }, /^RPPD_NAME="n+" \(env\) is longer than 64 characters$/],
    [{ RPPD_BIND: `${'h'.repeat(60)}:8881` }, /^RPPD_BIND="h+:8881" \(env\) is longer than 64 characters$/],
    [{ RPPD_HEARTBEAT_MS: '4000' }, /^RPPD_HEARTBEAT_MS="4000" \(env\) must be less than lease_ms=4000 \(default\)/],
    [{ RPPD_TLS_CERT: 'missing.pem' }, /^RPPD_TLS_CERT="missing\.pem" \(env\) names no file/],
    [{ RPPD_HTTP: ':8881' }, /^RPPD_HTTP=":8881" \(env\) is the same host:port as bind=localhost:8881 \(default\)$/],
  ];
  for (const [env, pattern] of errors) {
    test(`error names the setting and its source: ${Object.keys(env).join(' ')}=${Object.values(env).join(' ').slice(0, 12)}`, () => {
      assert.throws(() => resolveIn([], env), usageError(pattern));
    });
  }

  test('TLS needs cert and key; ca alone is refused', () => {
    const cert = write('a.crt', 'c');
    const key = write('a.key', 'k');
    const ca = write('ca.crt', 'ca');
    assert.deepEqual(resolveIn([], { RPPD_TLS_CERT: cert, RPPD_TLS_KEY: key, RPPD_TLS_CA: ca }).tls, { cert, key, ca });
    assert.throws(
      () => resolveIn([], { RPPD_TLS_CERT: cert }),
      usageError(/RPPD_TLS_CERT=.* \(env\) is set but tls_key is not/),
    );
    assert.throws(
      () => resolveIn([], { RPPD_TLS_CA: ca }),
      usageError(/RPPD_TLS_CA=.* \(env\) is set but tls_cert and tls_key are not/),
    );
  });

  test('secret from RPPD_SECRET_FILE or a file secret_file; never echoed in errors', () => {
    write('node.secret', 'a-long-shared-secret-value\n');
    assert.equal(resolveIn([], { RPPD_SECRET_FILE: 'node.secret' }).secret, 'a-long-shared-secret-value');
    const conf = write('secret.conf', 'secret_file = node.secret\n');
    const s = resolveIn([conf]);
    assert.equal(s.secret, 'a-long-shared-secret-value');
    assert.equal(s.sources.secret, 'file');
    const short = resolveIn([], { RPPD_SECRET: 'shorty' });
    assert.deepEqual(short.warnings, ['RPPD_SECRET=*** (env) is shorter than 16 characters: easy to guess']);
    assert.throws(
      () => resolveIn([], { RPPD_SECRET: 'sekrit', RPPD_SECRET_FILE: 'node.secret' }),
      (err: Error) => err instanceof UsageError && !err.message.includes('sekrit'),
    );
  });
});

describe('resolveSettings result', () => {
  test('sources say where each setting came from', () => {
    const path = write('sources.conf', 'bind = :7001\nlease_ms = 6000\n');
    const s = resolveIn(['rppd', path], { RPPD_POLL_MS: '200', USER: 'eve' });
    assert.equal(s.sources.schema, 'args');
    assert.equal(s.sources.bind, 'file');
    assert.equal(s.sources.lease_ms, 'file');
    assert.equal(s.sources.poll_ms, 'env');
    assert.equal(s.sources.url, 'default');
    assert.equal(s.sources.user, 'default');
    assert.equal(s.sources.password, undefined);
    assert.equal(s.sources.max_attempts, 'default');
    assert.equal(Object.keys(s.sources)[0], 'schema');
  });

  test('is deeply frozen', () => {
    const s = resolveIn(['[::1]:9000']);
    assert.ok(Object.isFrozen(s));
    assert.ok(Object.isFrozen(s.bind));
    assert.ok(Object.isFrozen(s.sources));
    assert.ok(Object.isFrozen(s.warnings));
    assert.throws(() => {
      (s.bind as { port: number }).port = 1;
    }, TypeError);
  });

  test('describeSettings lists every setting with its source and hides secrets', () => {
    const lines = describeSettings(
      resolveIn(['postgres://u:pw@db/app'], { RPPD_SECRET: 'a-long-shared-secret-value' }),
    );
    assert.ok(lines.includes('url = postgres://u:***@db/app (args)'));
    assert.ok(lines.includes('secret = *** (env)'));
    assert.ok(lines.includes('lease_ms = 4000 (default)'));
    assert.ok(!lines.join('\n').includes('a-long-shared-secret-value'));
  });
});

describe('parseDbArgs (rppd init)', () => {
  test('schema, URL and credentials by the same rules', () => {
    const s = parseDbArgs(['postgres://db/app', 'rppd.'], { PGUSER: 'init', PGPASSWORD: 'pw' }, { cwd });
    assert.equal(s.schema, 'rppd');
    assert.equal(s.url, 'postgres://init:pw@db/app');
    assert.equal(s.urlRedacted, 'postgres://init:***@db/app');
    assert.equal(s.sources.schema, 'args');
    assert.ok(Object.isFrozen(s));
  });

  test('env beats args, and a config file is read', () => {
    const path = write('init.conf', 'schema = from_file\nurl = postgres://filehost/app\nbind = :1\n');
    const s = parseDbArgs([path], { RPPD_SCHEMA: 'from_env' }, { cwd });
    assert.equal(s.schema, 'from_env');
    assert.equal(s.url, 'postgres://filehost/app');
    assert.deepEqual(s.warnings, []);
  });

  test('a bind is refused', () => {
    assert.throws(
      () => parseDbArgs(['rppd', 'h:1'], {}, { cwd }),
      usageError(/rppd init takes only a schema and a URL/),
    );
  });
});

describe('usage', () => {
  test('start lists every setting with its env variable', () => {
    const text = usage('start');
    for (const name of [
      'RPPD_LEASE_MS',
      'RPPD_SECRET_FILE',
      'DATABASE_URL',
      'PGPASSWORD_FILE',
      'rppd.rppd_config',
      '--name=NAME',
    ]) {
      assert.ok(text.includes(name), name);
    }
  });

  test('init mentions only the database settings', () => {
    assert.ok(usage('init').includes('RPPD_URL'));
    assert.ok(!usage('init').includes('RPPD_BIND'));
  });
});

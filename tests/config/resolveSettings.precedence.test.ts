// env > args > file > default, per setting, for the four settings the seed README names.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { resolveSettings } from '../../src/config/resolveSettings.ts';
import type { Settings } from '../../src/config/settings.ts';

const cwd = mkdtempSync(join(tmpdir(), 'rppd-precedence-'));
after(() => rmSync(cwd, { recursive: true, force: true }));

interface Layers {
  env: Record<string, string>;
  arg: string;
  file: string;
}

type Expected = Record<'env' | 'args' | 'file' | 'default', string>;

const table: {
  key: 'schema' | 'url' | 'bind' | 'name';
  read: (s: Settings) => string;
  layers: Layers;
  expected: Expected;
}[] = [
  {
    key: 'schema',
    read: (s) => s.schema,
    layers: { env: { RPPD_SCHEMA: 'from_env' }, arg: 'from_args', file: 'schema = from_file' },
    expected: { env: 'from_env', args: 'from_args', file: 'from_file', default: 'public' },
  },
  {
    key: 'url',
    read: (s) => s.url,
    layers: {
      env: { RPPD_URL: 'postgres://e@envhost/db' },
      arg: 'postgres://a@arghost/db',
      file: 'url: postgres://f@filehost/db',
    },
    expected: {
      env: 'postgres://e@envhost/db',
      args: 'postgres://a@arghost/db',
      file: 'postgres://f@filehost/db',
      default: 'postgres://someone@localhost:5432/someone',
    },
  },
  {
    key: 'bind',
    read: (s) => s.bind.text,
    layers: { env: { RPPD_BIND: 'envhost:1001' }, arg: 'arghost:1002', file: 'bind = filehost:1003' },
    expected: { env: 'envhost:1001', args: 'arghost:1002', file: 'filehost:1003', default: 'localhost:8881' },
  },
  {
    key: 'name',
    read: (s) => s.name,
    layers: { env: { RPPD_NAME: 'env-node' }, arg: '--name=args-node', file: 'name = file-node' },
    expected: { env: 'env-node', args: 'args-node', file: 'file-node', default: 'this-host' },
  },
];

function resolveWith(key: string, layers: Partial<Layers>): Settings {
  const argv: string[] = [];
  if (layers.arg) argv.push(layers.arg);
  if (layers.file) {
    const path = join(cwd, `${key}.conf`);
    writeFileSync(path, `${layers.file}\n`);
    argv.push(path);
  }
  return resolveSettings(argv, { USER: 'someone', ...layers.env }, { cwd, hostname: 'this-host' });
}

describe('precedence env > args > file > default', () => {
  for (const { key, read, layers, expected } of table) {
    const cases: [string, Partial<Layers>, keyof Expected][] = [
      ['env beats args and file', layers, 'env'],
      ['args beat file', { arg: layers.arg, file: layers.file }, 'args'],
      ['file beats default', { file: layers.file }, 'file'],
      ['default when nothing is given', {}, 'default'],
    ];
    for (const [what, given, source] of cases) {
      test(`${key}: ${what}`, () => {
        const settings = resolveWith(key, given);
        assert.equal(read(settings), expected[source]);
        assert.equal(settings.sources[key], source);
      });
    }
  }

  test('an argument overridden by env is reported', () => {
    const settings = resolveWith('schema', { env: { RPPD_SCHEMA: 'from_env' }, arg: 'from_args' });
    assert.deepEqual(settings.warnings, [
      'schema "from_args" (argument 1) is overridden by RPPD_SCHEMA="from_env" (env)',
    ]);
  });

  test('RPPD_URL beats DATABASE_URL', () => {
    const env = { RPPD_URL: 'postgres://one/db', DATABASE_URL: 'postgres://two/db' };
    assert.equal(resolveSettings([], env, { cwd }).url, 'postgres://one/db');
    assert.equal(resolveSettings([], { DATABASE_URL: 'postgres://two/db' }, { cwd }).url, 'postgres://two/db');
  });

  test('an empty environment variable counts as unset', () => {
    assert.equal(resolveSettings(['from_args'], { RPPD_SCHEMA: '' }, { cwd }).schema, 'from_args');
  });

  test('--verbose means debug unless RPPD_LOG_LEVEL says otherwise; a file log_level is beaten by --verbose', () => {
    const path = join(cwd, 'level.conf');
    writeFileSync(path, 'log_level = warn\n');
    assert.equal(resolveSettings([path], {}, { cwd }).logLevel, 'warn');
    const verbose = resolveSettings([path, '--verbose'], {}, { cwd });
    assert.equal(verbose.logLevel, 'debug');
    assert.equal(verbose.verbose, true);
    assert.equal(verbose.sources.log_level, 'args');
    assert.equal(resolveSettings(['--verbose'], { RPPD_LOG_LEVEL: 'trace' }, { cwd }).logLevel, 'trace');
  });
});

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseArgs } from '../../src/config/parseArgs.ts';
import { UsageError } from '../../src/util/errors.ts';

const cwd = mkdtempSync(join(tmpdir(), 'rppd-args-'));
after(() => rmSync(cwd, { recursive: true, force: true }));
writeFileSync(join(cwd, 'node.conf'), 'schema = rppd\n');
mkdirSync(join(cwd, 'confdir'));
writeFileSync(join(cwd, 'confdir', 'rppd.rppd_config'), 'schema = rppd\n');
// A directory that happens to have a schema's name.
mkdirSync(join(cwd, 'app'));

const parse = (...argv: string[]) => parseArgs(argv, { cwd });
const parseDb = (...argv: string[]) => parseArgs(argv, { cwd, mode: 'db' });
const usageError = (pattern: RegExp) => (err: unknown) => err instanceof UsageError && pattern.test(err.message);

describe('parseArgs positionals', () => {
  const url = 'postgres://u@db:5432/app';
  const orders = [
    ['rppd.', url, 'node1:9000'],
    [url, 'node1:9000', 'rppd.'],
    ['node1:9000', 'rppd.', url],
  ];
  for (const argv of orders) {
    test(`are told apart by form in any order: ${argv.join(' ')}`, () => {
      const args = parse(...argv);
      assert.equal(args.schema?.value, 'rppd.');
      assert.equal(args.url?.value, url);
      assert.equal(args.bind?.value, 'node1:9000');
    });
  }

  test('postgresql:// is a URL too', () => {
    assert.equal(parse('postgresql://db/app').url?.value, 'postgresql://db/app');
  });

  test('an existing file is the config file, wherever it stands', () => {
    const args = parse('rppd', 'node.conf', ':9000');
    assert.equal(args.configFile?.value, join(cwd, 'node.conf'));
    assert.equal(args.schema?.value, 'rppd');
    assert.equal(args.bind?.value, ':9000');
  });

  test('a directory means its rppd.rppd_config', () => {
    assert.equal(parse('confdir').configFile?.value, join(cwd, 'confdir', 'rppd.rppd_config'));
  });

  test('a directory without rppd.rppd_config is an error that suggests the trailing-dot schema', () => {
    assert.throws(() => parse('app'), usageError(/argument 1 "app" is a directory without rppd\.rppd_config.*"app\."/));
    assert.equal(parse('app.').schema?.value, 'app.');
  });

  test('four positionals besides the config file are too many and the fourth is named', () => {
    assert.throws(() => parse('a', 'postgres://h/d', 'h:1', 'b'), usageError(/too many arguments: "b" \(argument 4\)/));
    // the config file does not count
    assert.equal(parse('a', 'postgres://h/d', 'h:1', 'node.conf').configFile?.value, join(cwd, 'node.conf'));
  });

  test('two of a kind name both arguments', () => {
    assert.throws(
      () => parse('postgres://a/x', 'postgresql://b/y'),
      usageError(/two URLs: .*"postgres:\/\/a\/x" \(argument 1\).*\(argument 2\)/),
    );
    assert.throws(
      () => parse('s1', 's2'),
      usageError(/two schemas: schema "s1" \(argument 1\) and schema "s2" \(argument 2\)/),
    );
    assert.throws(() => parse(':1', 'h:2'), usageError(/two host:port binds/));
    assert.throws(() => parse('node.conf', '--config=confdir'), usageError(/two config files/));
  });

  test('a bare number is not a bind, and the error says how to write a port', () => {
    assert.throws(
      () => parse('8882'),
      usageError(/"8882" is not a schema, URL or host:port \(for a port, write ":8882"\)/),
    );
  });

  test('a path that does not exist is an error, not a schema', () => {
    assert.throws(() => parse('conf/missing.conf'), usageError(/"conf\/missing\.conf" names no existing file/));
  });

  test('a URL of another scheme is refused', () => {
    assert.throws(() => parse('mysql://h/d'), usageError(/not postgres:\/\/ or postgresql:\/\//));
  });

  test('a password in a rejected URL is not echoed', () => {
    assert.throws(
      () => parse('postgres://u:hunter2@a/x', 'postgres://b/y'),
      (err: Error) => !err.message.includes('hunter2'),
    );
  });
});

describe('parseArgs flags', () => {
  test('--name, --verbose and --config are read', () => {
    const args = parse('--name=node-a', '--verbose', '--config=node.conf');
    assert.equal(args.name?.value, 'node-a');
    assert.equal(args.verbose?.value, 'debug');
    assert.equal(args.configFile?.value, join(cwd, 'node.conf'));
  });

  test('an unknown flag is named', () => {
    assert.throws(
      () => parse('rppd', '--force_master=true'),
      usageError(/unknown option "--force_master=true" \(argument 2\)/),
    );
    assert.throws(() => parse('--verbose=yes'), usageError(/unknown option "--verbose=yes"/));
  });

  test('--name without a value is an error', () => {
    assert.throws(() => parse('--name='), usageError(/--name \(argument 1\) needs a value/));
  });

  test('--config naming nothing is an error', () => {
    assert.throws(
      () => parse('--config=nope.conf'),
      usageError(/--config="nope\.conf" \(argument 1\) names no existing file/),
    );
  });
});

describe('parseArgs for rppd init', () => {
  test('takes a schema, a URL and a config file', () => {
    const args = parseDb('postgres://h/d', 'rppd.', 'node.conf');
    assert.equal(args.schema?.value, 'rppd.');
    assert.equal(args.url?.value, 'postgres://h/d');
    assert.equal(args.configFile?.value, join(cwd, 'node.conf'));
  });

  test('refuses a bind and --name', () => {
    assert.throws(
      () => parseDb('rppd', ':9000'),
      usageError(/":9000" \(argument 2\) looks like a host:port; rppd init takes only/),
    );
    assert.throws(() => parseDb('--name=x'), usageError(/unknown option "--name=x"/));
  });

  test('a third positional is too many', () => {
    assert.throws(() => parseDb('a', 'postgres://h/d', 'b'), usageError(/too many arguments: "b" \(argument 3\)/));
  });
});

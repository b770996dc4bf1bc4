import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseConfigText, readConfigFile } from '../../src/config/readConfigFile.ts';
import { UsageError } from '../../src/util/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'rppd-file-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** key → value of a config text. */
function values(text: string): Record<string, string> {
  const { entries } = parseConfigText(text, 'test');
  return Object.fromEntries([...entries].map(([key, entry]) => [key, entry.value]));
}

describe('parseConfigText', () => {
  test('key = value lines, keys lower-cased', () => {
    assert.deepEqual(values('Schema = rppd\nURL = postgres://u:p@db:5432/app\nbind=node1:8881\n'), {
      schema: 'rppd',
      url: 'postgres://u:p@db:5432/app',
      bind: 'node1:8881',
    });
  });

  test('key: value lines keep the colons and slashes of a URL value', () => {
    assert.deepEqual(values('url: postgres://u@h:5432/db\nbind: [::1]:8882\nname: node-a\n'), {
      url: 'postgres://u@h:5432/db',
      bind: '[::1]:8882',
      name: 'node-a',
    });
  });

  test('INI: [section] headers and ; comments are skipped', () => {
    const text =
      '; rppd node\n[rppd]\nschema = rppd\n[database]\nurl = postgres://db/app\n; url = postgres://old/app\n';
    assert.deepEqual(values(text), { schema: 'rppd', url: 'postgres://db/app' });
  });

  test('.env: quotes stripped, export and RPPD_ prefixes understood, # comments skipped', () => {
    const text =
      '# env\nexport RPPD_SCHEMA="rppd"\nDATABASE_URL=\'postgres://db/app\'\nRPPD_LEASE_MS=7000\nNAME="a b"\n';
    assert.deepEqual(values(text), { schema: 'rppd', url: 'postgres://db/app', lease_ms: '7000', name: 'a b' });
  });

  test('YAML-ish: indented keys, a bare "section:" line is not a setting', () => {
    const text = 'rppd:\n  schema: rppd\n  lease_ms: 8000\n  # off for now\n  # http: :8080\n';
    assert.deepEqual(values(text), { schema: 'rppd', lease_ms: '8000' });
  });

  test('// comments and lines without = or : are skipped; CRLF is fine', () => {
    assert.deepEqual(values('// note: ignored\r\njust prose\r\nschema = rppd\r\n'), { schema: 'rppd' });
  });

  test('only matching quotes are stripped', () => {
    assert.deepEqual(values("name = \"a'\nsecret = 's3cr3t'\n"), { name: '"a\'', secret: 's3cr3t' });
  });

  test('unknown keys are ignored and reported with their line', () => {
    const { entries, warnings } = parseConfigText('schema = rppd\ncolour = blue\n', 'config file x');
    assert.deepEqual([...entries.keys()], ['schema']);
    assert.deepEqual(warnings, ['config file x line 2: unknown key "colour" ignored']);
  });

  test('a repeated key: the last line wins, with a warning', () => {
    const { entries, warnings } = parseConfigText('schema = a\nschema = b\n', 'f');
    assert.equal(entries.get('schema')?.value, 'b');
    assert.match(warnings[0]!, /"schema" repeats line 1; line 2 is used/);
  });
});

describe('readConfigFile', () => {
  test('reads a file and keeps its path', () => {
    const path = join(dir, 'node.conf');
    writeFileSync(path, 'schema = rppd\n');
    const file = readConfigFile(path, 'argument 1');
    assert.equal(file.path, path);
    assert.equal(file.entries.get('schema')?.value, 'rppd');
    assert.equal(file.entries.get('schema')?.line, 1);
  });

  test('a file that yields no rppd key is an error naming it and the argument', () => {
    const path = join(dir, 'notes.txt');
    writeFileSync(path, '# just notes\nhello: world\n');
    assert.throws(
      () => readConfigFile(path, 'argument 2'),
      (err: unknown) =>
        err instanceof UsageError && err.message.includes(`config file ${path} (argument 2) has no rppd setting`),
    );
  });

  test('an unreadable file is a UsageError', () => {
    assert.throws(() => readConfigFile(join(dir, 'missing'), 'argument 1'), UsageError);
  });
});

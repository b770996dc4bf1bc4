// The schema the extension creates, described from the catalog and compared with
// the committed snapshot, so every DDL change shows up as a plain diff.
// Refresh after an intended change: RPPD_UPDATE_SNAPSHOT=1 npm run test:only -- schemaSnapshot
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import { extensionDir } from '../../src/db/extensionFiles.ts';
import { installSchema } from '../../src/db/installSchema.ts';
import { type Fixture, setupFixture } from '../support/fixture.ts';

const snapshotFile = join(extensionDir, 'schema.snapshot.txt');

async function describeSchema(client: pg.Client, schema: string): Promise<string> {
  const q = async (sql: string) => (await client.query(sql, [schema])).rows.map((r) => Object.values(r).join(' | '));
  const sections: [string, string[]][] = [
    [
      'columns',
      await q(`SELECT table_name, column_name, data_type, coalesce(character_maximum_length::text, '') AS len, is_nullable,
                      coalesce(column_default, '') AS dflt
                 FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, ordinal_position`),
    ],
    [
      'constraints',
      await q(`SELECT c.relname, pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 ORDER BY 1, 2`),
    ],
    [
      'indexes',
      await q(
        `SELECT tablename, regexp_replace(indexdef, ' ON \\S+\\.', ' ON ') FROM pg_indexes WHERE schemaname = $1 ORDER BY 1, 2`,
      ),
    ],
    [
      'triggers',
      await q(`SELECT c.relname, t.tgname, regexp_replace(pg_get_triggerdef(t.oid), ' ON \\S+\\.', ' ON ')
                 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY 1, 2`),
    ],
    [
      'functions',
      await q(`SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') ' || pg_get_function_result(p.oid)
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY 1`),
    ],
  ];
  return `${sections.map(([name, rows]) => `## ${name}\n${rows.join('\n')}`).join('\n\n')}\n`;
}

let f: Fixture;
let client: pg.Client;
before(async () => {
  f = await setupFixture({ install: false });
  client = f.db;
});
after(async () => f?.close());

test('the extension creates exactly the committed schema snapshot', async () => {
  await installSchema(client, 'snap', { mode: 'sql' });
  const actual = (await describeSchema(client, 'snap')).replaceAll('snap.', '@extschema@.');
  if (process.env.RPPD_UPDATE_SNAPSHOT) writeFileSync(snapshotFile, actual);
  assert.equal(actual, readFileSync(snapshotFile, 'utf8'), 'schema drifted: review, then RPPD_UPDATE_SNAPSHOT=1');
});

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
import { describeSchema } from '../support/describeSchema.ts';
import { type Fixture, setupFixture } from '../support/fixture.ts';

const snapshotFile = join(extensionDir, 'schema.snapshot.txt');

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

// The LISTEN connection: channels added and removed while it runs (a node listens on
// rppd_event only while it is master), and listened on again after a reconnect.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type Listener, startListener } from '../../src/db/listener.ts';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import { waitFor } from '../support/waitFor.ts';

let f: Fixture;
let listener: Listener;
const heard: string[] = [];
let connects = 0;
before(async () => {
  f = await setupFixture({ install: false });
  listener = startListener({
    url: f.url,
    channels: ['base'],
    onNotify: (channel, payload) => heard.push(`${channel}:${payload}`),
    onConnected: () => connects++,
    onError: () => undefined,
  });
  await waitFor(() => connects === 1, { what: 'the listener connected' });
});
after(async () => {
  await listener?.close();
  await f?.close();
});

/** Notifications arrive in commit order: once the marker is heard, everything sent before it was. */
async function heardUpTo(marker: string): Promise<string[]> {
  await f.db.query(`NOTIFY base, '${marker}'`);
  await waitFor(() => heard.includes(`base:${marker}`), { what: `the marker ${marker}` });
  return heard.splice(0);
}

test('a channel added later is heard, and not once it is removed', async () => {
  await f.db.query(`NOTIFY extra, 'before'`);
  assert.deepEqual(await heardUpTo('m1'), ['base:m1']);
  await listener.listen('extra');
  await f.db.query(`NOTIFY extra, 'while'`);
  assert.deepEqual(await heardUpTo('m2'), ['extra:while', 'base:m2']);
  await listener.unlisten('extra');
  await f.db.query(`NOTIFY extra, 'after'`);
  assert.deepEqual(await heardUpTo('m3'), ['base:m3']);
});

test('after its connection is killed it listens on the channels it had, added ones included', async () => {
  await listener.listen('extra');
  await f.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'rppd listen'`);
  await waitFor(() => connects === 2, { what: 'the listener reconnected' });
  await f.db.query(`NOTIFY extra, 'again'`);
  assert.deepEqual(await heardUpTo('m4'), ['extra:again', 'base:m4']);
});

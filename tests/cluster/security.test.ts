// Node-to-node security: a shared secret on every call, mutual TLS, epochs checked
// against the database, and no unauthenticated node on an address other machines reach.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { type RunRequest, rppdNodeClientConstructor, SECRET_HEADER } from '../../src/rpc/protocol.ts';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import { freePort } from '../support/pgServer.ts';
import { type RppdProcess, spawnRppd } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';
import { feedUntil, rawRunBatch, startNodes, waitForMasterRow, waitForReady } from './clusterSupport.ts';

const SECRET = 'correct horse battery staple';

/** A CA and one certificate for 127.0.0.1 that every node uses (server and client). */
function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=rppd test CA');
  ssl('req', ...ec, '-keyout', 'node.key', '-out', 'node.csr', '-subj', '/CN=rppd node');
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  const sign = ['-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf'];
  ssl('x509', '-req', '-in', 'node.csr', ...sign, '-out', 'node.pem');
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'node.pem'), key: join(dir, 'node.key') };
}

type Call = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, reply?: unknown) => void,
) => void;

/** One raw Status call to a node, as any network peer could make it. */
function rawCall(
  host: string,
  credentials: grpc.ChannelCredentials,
  method: 'Status',
  request: Record<string, unknown>,
  secret?: string,
): Promise<{ err: grpc.ServiceError | null; reply?: unknown }> {
  const Client = rppdNodeClientConstructor();
  const client = new Client(host, credentials) as unknown as grpc.Client & Record<'Status', Call>;
  const metadata = new grpc.Metadata();
  if (secret !== undefined) metadata.set(SECRET_HEADER, secret);
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (err, reply) => {
      client.close();
      resolve({ err, reply });
    });
  });
}

describe('cluster security', () => {
  let f: Fixture;
  let dir: string;
  let certs: { ca: string; cert: string; key: string };
  let tlsClient: grpc.ChannelCredentials;
  let hosts: Map<string, { id: number; host: string }>;
  let procs: Map<string, RppdProcess>;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rppd-tls-'));
    certs = makeCerts(dir);
    tlsClient = grpc.credentials.createSsl(readFileSync(certs.ca), readFileSync(certs.key), readFileSync(certs.cert));
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE job (id serial PRIMARY KEY);
      CREATE TRIGGER job_event AFTER INSERT ON job FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang, queue, fn_logging) VALUES ($1, 'na', 'job', 'js', false, true)`,
      [`export default async () => { await new Promise((r) => setTimeout(r, 100)); };`],
    );
    const env = { RPPD_SECRET: SECRET, RPPD_TLS_CERT: certs.cert, RPPD_TLS_KEY: certs.key, RPPD_TLS_CA: certs.ca };
    procs = await startNodes(f, ['s1', 's2'], env);
    await waitForReady(f, ['s1', 's2']);
    const rows = await f.query<{ id: number; host: string; host_name: string }>(
      'SELECT id, host, host_name FROM rppd_config',
    );
    hosts = new Map(rows.map((r) => [r.host_name, { id: r.id, host: r.host }]));
  });
  after(async () => {
    await f?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('nodes with a secret and mutual TLS dispatch to each other', async () => {
    await f.db.query('UPDATE rppd_config SET max_db_connections = 2');
    const ranOn = async () => (await f.query('SELECT DISTINCT node_id FROM rppd_function_log')).length;
    await feedUntil(
      () => f.db.query('INSERT INTO job SELECT FROM generate_series(1, 4)'),
      async () => (await ranOn()) === 2,
      'runs logged by both nodes',
    );
    assert.equal(await ranOn(), 2);
    const failed = await f.query('SELECT error_msg FROM rppd_function_log WHERE error_msg IS NOT NULL');
    assert.deepEqual(failed, []);
  });

  test('a call with a wrong or no secret is refused with UNAUTHENTICATED and logged', async () => {
    const { host } = hosts.get('s2')!;
    for (const secret of ['wrong secret', undefined]) {
      const { err } = await rawCall(host, tlsClient, 'Status', { epoch: '1', master_id: 1 }, secret);
      assert.equal(err?.code, grpc.status.UNAUTHENTICATED, `secret ${secret ?? '(none)'}`);
    }
    const batch = rawRunBatch(
      host,
      { epoch: '1', master_id: 1, runs: [{ run_id: 'x' } as RunRequest] },
      { credentials: tlsClient, secret: 'wrong' },
    );
    assert.equal((await batch.done)?.code, grpc.status.UNAUTHENTICATED);
    assert.deepEqual(batch.replies, [], 'nothing ran');
    const logged = await procs
      .get('s2')!
      .waitForLog((l) => l.msg === 'refused a node-to-node call: missing or wrong secret');
    assert.equal(logged.method, 'Status');
  });

  test('a peer with the secret cannot make a node accept an epoch the database does not hold', async () => {
    const master = await waitForMasterRow(f);
    const other = [...hosts].find(([name]) => name !== master.host_name)![1];
    const forged = String(BigInt(master.epoch) + 100n);
    const claim = await rawCall(other.host, tlsClient, 'Status', { epoch: forged, master_id: other.id }, SECRET);
    assert.equal(claim.err?.code, grpc.status.FAILED_PRECONDITION);
    assert.match(claim.err?.details ?? '', /is not master: the database says node/);
    const stale = rawRunBatch(
      other.host,
      { epoch: '0', master_id: master.id, runs: [{ run_id: 'old', fn_id: 1, input_json: '{}' } as RunRequest] },
      { credentials: tlsClient, secret: SECRET },
    );
    const refused = await stale.done;
    assert.equal(refused?.code, grpc.status.FAILED_PRECONDITION);
    assert.match(refused?.details ?? '', /stale/);
    const now = await waitForMasterRow(f);
    assert.deepEqual(now, master, 'mastership did not move');
    // The node still takes work from the real master.
    await f.db.query('INSERT INTO job SELECT FROM generate_series(1, 10)');
    await waitFor(async () => (await f.query('SELECT 1 FROM rppd_event_queue')).length === 0, { what: 'queue empty' });
  });

  test('a caller without TLS, or without a client certificate, gets no answer', async () => {
    const { host } = hosts.get('s1')!;
    const plain = await rawCall(host, grpc.credentials.createInsecure(), 'Status', { epoch: '1' }, SECRET);
    assert.equal(plain.err?.code, grpc.status.UNAVAILABLE);
    const noCert = await rawCall(host, grpc.credentials.createSsl(readFileSync(certs.ca)), 'Status', {}, SECRET);
    assert.equal(noCert.err?.code, grpc.status.UNAVAILABLE);
  });

  test('a node bound to an address other machines can reach refuses to start without a secret', async () => {
    const port = await freePort();
    const p = spawnRppd(['start', f.url, `0.0.0.0:${port}`, '--name=open']);
    const exit = await p.exited;
    assert.equal(exit.code, 2);
    assert.match(p.stderr.join(''), /reachable from other machines but no secret is set/);
  });
});

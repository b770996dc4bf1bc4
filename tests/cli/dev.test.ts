// `npm start` = `rppd dev`: embedded PostgreSQL, demo functions, a node, and the
// first event shown end to end, with no setup.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort } from '../support/pgServer.ts';
import { spawnRppd } from '../support/rppdProcess.ts';

test('rppd dev runs the demo end to end and stops cleanly on SIGTERM', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rppd-dev-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const nodePort = await freePort();
  const p = spawnRppd(['dev', `--dir=${dir}`, `--port=${port}`], {
    RPPD_PYTHON: '/usr/bin/python3',
    RPPD_BIND: `127.0.0.1:${nodePort}`,
  });
  try {
    const line = await p.waitForLog((l) => /demo_sink:/.test(String(l.msg)), 180_000, 'the demo event');
    assert.match(String(line.msg), /js: 11 chars/);
    assert.match(String(line.msg), /python: FIRST EVENT/);
    assert.match(p.output(), /INSERT INTO demo_source/);
    const exit = await p.kill('SIGTERM');
    assert.equal(exit.code, 0);
  } finally {
    await p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

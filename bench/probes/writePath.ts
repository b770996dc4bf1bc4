// Probe behind finding 21 (bench/README.md): what each part of rppd_event() costs a writer.
// Every variant is a copy of src with a trigger writing into its own copy of the queue; the
// variants interleave in rounds, so background load hits them alike.
//
//   node --import tsx bench/probes/writePath.ts [clients=8,1] [seconds=5] [rounds=7] [variant,...]
//       pgbench single-row autocommit INSERTs (as W1), median tps and the ratio to no trigger
//   CALLGRIND=1 node --import tsx bench/probes/writePath.ts [] [] [] [variant,...]
//       instructions per INSERT statement (valgrind's callgrind on a single-user backend): the
//       same count on every run, whatever else the machine does. No master holds the poll lock
//       in single-user mode, so the lock test is inverted there (the NOTIFY is not sent).
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startPg } from '../../tests/support/pgServer.ts';
import { sql } from '../db.ts';
import { RPPD_SCHEMA, rppd } from '../systems/rppd.ts';

const run = promisify(execFile);
const clientsList = (process.argv[2] || '8,1').split(',').map(Number);
const seconds = Number(process.argv[3] || 5);
const rounds = Number(process.argv[4] || 7);
const only = process.argv[5]?.split(',');
const callgrind = !!process.env.CALLGRIND;

interface Variant {
  why: string;
  /** Columns of the variant's queue copy (Q), or none. */
  queue?: string;
  /** plpgsql body writing into Q; 'installed' = the body of rppd.rppd_event() now installed. */
  body?: string;
}

const V1_0_QUEUE = `(id bigserial PRIMARY KEY, schema_table text NOT NULL, trig smallint NOT NULL, new_row jsonb,
  old_row jsonb, created_at timestamptz NOT NULL DEFAULT now(), done_fns int[] NOT NULL DEFAULT '{}',
  attempts int NOT NULL DEFAULT 0, last_error text, node_id int, epoch bigint, fn_id int, cron_id int)`;
const V1_0_BODY = `DECLARE st text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
BEGIN
  IF current_setting('rppd.node', true) = 'local' THEN RETURN NULL; END IF;
  IF TG_LEVEL = 'STATEMENT' THEN
    IF TG_OP <> 'TRUNCATE' THEN RETURN NULL; END IF;
    INSERT INTO Q (schema_table, trig) VALUES (st, 3);
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO Q (schema_table, trig, new_row) VALUES (st, 1, to_jsonb(NEW));
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO Q (schema_table, trig, new_row, old_row) VALUES (st, 0, to_jsonb(NEW), to_jsonb(OLD));
  ELSE
    INSERT INTO Q (schema_table, trig, old_row) VALUES (st, 2, to_jsonb(OLD));
  END IF;
  -- 1.0.0 tested the poll lock (notify unless held); the probe runs with no master, so the
  -- lock test of 1.2.0 costs the same and sends no NOTIFY either.
  IF NOT pg_try_advisory_xact_lock_shared(1919971438, hashtext('${RPPD_SCHEMA}')) THEN
    PERFORM pg_notify('rppd_event', '${RPPD_SCHEMA}');
  END IF;
  RETURN NULL;
END`;
const V1_1_QUEUE = `(id bigserial PRIMARY KEY, schema_table text NOT NULL, trig smallint NOT NULL, new_row json,
  old_row json, created_at timestamptz NOT NULL DEFAULT now())`;
const MINIMAL = 'BEGIN INSERT INTO Q (rel, trig, new_row) VALUES (TG_RELID, 1, to_json(NEW)); RETURN NULL; END';

const variants: Record<string, Variant> = {
  plain: { why: 'no trigger (the baseline)' },
  empty: { why: 'a plpgsql AFTER ROW trigger that does nothing: the floor of any', body: 'BEGIN RETURN NULL; END' },
  minimal: {
    why: 'one INSERT of (oid, kind, to_json(NEW)) into an index-free table: the floor of a trigger writing the row',
    queue: '(rel oid, trig smallint, new_row json)',
    body: MINIMAL,
  },
  minimal_pk: {
    why: 'the same with a bigserial primary key',
    queue: '(id bigserial PRIMARY KEY, rel oid, trig smallint, new_row json)',
    body: MINIMAL,
  },
  v1_0: { why: "1.0.0's rppd_event() and queue (13 columns, jsonb)", queue: V1_0_QUEUE, body: V1_0_BODY },
  v1_1: { why: 'the rppd_event() installed now, into a copy of its queue', queue: V1_1_QUEUE, body: 'installed' },
  v1_1_noindex: {
    why: 'the same without the primary key',
    queue: V1_1_QUEUE.replace(' PRIMARY KEY', ''),
    body: 'installed',
  },
  v1_1_no_created_at: {
    why: 'the same without created_at',
    queue: V1_1_QUEUE.replace(',\n  old_row json, created_at timestamptz NOT NULL DEFAULT now())', ', old_row json)'),
    body: 'installed',
  },
};

const pg = await startPg({ durable: true });
const url = await pg.createDatabase('probe');
await sql(
  url,
  `CREATE TABLE src (id bigserial PRIMARY KEY, k int NOT NULL, payload text NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT clock_timestamp());
   CREATE TABLE sink (id bigserial PRIMARY KEY, src_id bigint, k int, started_ms float8, seq bigint, finished_at timestamptz)`,
);
await rppd.install(url);
const [installed] = await sql(
  url,
  `SELECT prosrc FROM pg_proc WHERE oid = '${RPPD_SCHEMA}.rppd_event()'::regprocedure`,
);
const installedBody = String(installed!.prosrc).replaceAll(`${RPPD_SCHEMA}.rppd_event_queue`, 'Q');
const names = Object.keys(variants).filter((n) => !only || only.includes(n) || n === 'plain');
for (const name of names) {
  const v = variants[name]!;
  await sql(url, `CREATE TABLE src_${name} (LIKE src INCLUDING ALL)`);
  if (v.queue) await sql(url, `CREATE TABLE q_${name} ${v.queue}`);
  if (!v.body) continue;
  let body = (v.body === 'installed' ? installedBody : v.body).replaceAll(/\bQ\b/g, `q_${name}`);
  if (callgrind) body = body.replace('IF pg_try_advisory_xact_lock_shared', 'IF NOT pg_try_advisory_xact_lock_shared');
  await sql(url, `CREATE FUNCTION trg_${name}() RETURNS trigger LANGUAGE plpgsql AS $body$ ${body} $body$`);
  await sql(url, `CREATE TRIGGER t AFTER INSERT ON src_${name} FOR EACH ROW EXECUTE FUNCTION trg_${name}()`);
}
const insert = (name: string) => `INSERT INTO src_${name} (k, payload) VALUES (1, 'payload');\n`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

if (callgrind) {
  // Single-user backends on the stopped server; (Ir(n2) - Ir(n1)) / (n2 - n1) cancels start-up.
  await run('runuser', [
    '-u',
    'postgres',
    '--',
    join(pg.binDir, 'pg_ctl'),
    '-D',
    pg.dataDir,
    '-m',
    'fast',
    '-w',
    'stop',
  ]);
  const instructions = (name: string, n: number) => {
    const r = spawnSync(
      'runuser',
      ['-u', 'postgres', '--', 'valgrind', '--tool=callgrind', '--callgrind-out-file=/dev/null'].concat([
        join(pg.binDir, 'postgres'),
        '--single',
        '-D',
        pg.dataDir,
        'probe',
      ]),
      { input: `SET synchronous_commit = off;\n${insert(name).repeat(n)}`, encoding: 'utf8', maxBuffer: 1 << 26 },
    );
    const m = /Collected : (\d+)/.exec(r.stderr);
    if (!m) throw new Error(r.stderr.slice(-2000));
    return Number(m[1]);
  };
  let plain = 0;
  for (const name of names) {
    const ir = (instructions(name, 1200) - instructions(name, 200)) / 1000;
    if (name === 'plain') plain = ir;
    console.log(
      `${name.padEnd(20)} ${Math.round(ir).toString().padStart(7)} Ir  +${Math.round(ir - plain)}  ${variants[name]!.why}`,
    );
  }
} else {
  // No master waits for NOTIFY (none holds rppd_listen_lock): writers send none.
  const dir = mkdtempSync(join(tmpdir(), 'rppd-write-path-'));
  for (const name of names) {
    writeFileSync(join(dir, `${name}.sql`), `\\set k random(0, 999)\n${insert(name).replace('(1,', '(:k,')}`);
  }
  for (const clients of clientsList) {
    const tps: Record<string, number[]> = {};
    for (let round = 0; round < rounds; round++)
      for (const name of names) {
        await sql(url, `TRUNCATE src_${name}${variants[name]!.queue ? `, q_${name}` : ''}`);
        await sql(url, `VACUUM ANALYZE src_${name}`);
        await sql(url, 'CHECKPOINT');
        const args = ['-n', '-f', join(dir, `${name}.sql`), '-c', String(clients), '-j', String(Math.min(2, clients))];
        const { stdout } = await run(`${pg.binDir}/pgbench`, [...args, '-T', String(seconds), '-M', 'prepared', url]);
        tps[name] = [...(tps[name] ?? []), Number(/tps = ([\d.]+)/.exec(stdout)![1])];
      }
    console.log(
      `--- ${clients} client(s), ${rounds} rounds of ${seconds} s: median rows/s, ratio to no trigger, rounds`,
    );
    for (const [name, xs] of Object.entries(tps)) {
      const ratio = (median(xs) / median(tps.plain!)).toFixed(3);
      console.log(
        `${name.padEnd(20)} ${String(Math.round(median(xs))).padStart(6)} ${ratio}  ${xs.map(Math.round).join('/')}`,
      );
    }
  }
}
await pg.stop();

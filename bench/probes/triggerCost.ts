// Where the rppd trigger's cost goes (bench/README.md, "What bounds rppd" item 6): pgbench with
// 8 clients on copies of src, each with a trimmed copy of rppd_event(), 3 interleaved rounds of 5 s.
//   node --import tsx bench/probes/triggerCost.ts
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPg } from '../../tests/support/pgServer.ts';
import { sql } from '../db.ts';
import { holdPollLock, rppd } from '../systems/rppd.ts';

const pg = await startPg({ durable: true });
const url = await pg.createDatabase('trig');
await sql(
  url,
  `CREATE TABLE src (id bigserial PRIMARY KEY, k int NOT NULL, payload text NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
);
await sql(
  url,
  `CREATE TABLE sink (id bigserial PRIMARY KEY, src_id bigint, k int, started_ms float8, finished_at timestamptz)`,
);
await rppd.install(url); // trigger on src
const releasePollLock = await holdPollLock(url); // as a polling master: writers send no NOTIFY
const Q = 'rppd.rppd_event_queue';
const variants: Record<string, string | null> = {
  plain: null,
  full: 'rppd.rppd_event()',
  no_exists_no_setting: `$$ BEGIN INSERT INTO ${Q} (schema_table, trig, new_row) VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1, to_jsonb(NEW)); IF pg_try_advisory_xact_lock_shared(1919971428, hashtext('rppd')) THEN PERFORM pg_notify('rppd_event', 'rppd'); END IF; RETURN NULL; END $$`,
  insert_only: `$$ BEGIN INSERT INTO ${Q} (schema_table, trig, new_row) VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1, to_jsonb(NEW)); RETURN NULL; END $$`,
  insert_no_json: `$$ BEGIN INSERT INTO ${Q} (schema_table, trig) VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1); RETURN NULL; END $$`,
  empty_trigger: `$$ BEGIN RETURN NULL; END $$`,
};
for (const [name, body] of Object.entries(variants)) {
  if (name === 'full') continue;
  await sql(url, `CREATE TABLE src_${name} (LIKE src INCLUDING ALL)`);
  if (body) {
    await sql(url, `CREATE FUNCTION trg_${name}() RETURNS trigger LANGUAGE plpgsql AS ${body}`);
    await sql(url, `CREATE TRIGGER t AFTER INSERT ON src_${name} FOR EACH ROW EXECUTE FUNCTION trg_${name}()`);
  }
  await sql(
    url,
    `INSERT INTO rppd.rppd_function (code, checksum, schema_table, lang, queue) VALUES ('x', '', 'public.src_${name}', 'js', false)`,
  );
}
const res: Record<string, number[]> = {};
const dir = mkdtempSync(join(tmpdir(), 'rppd-trigger-cost-'));
for (let round = 0; round < 3; round++)
  for (const name of Object.keys(variants)) {
    const table = name === 'full' ? 'src' : `src_${name}`;
    writeFileSync(
      join(dir, `${name}.sql`),
      `\\set k random(0, 999)\nINSERT INTO ${table} (k, payload) VALUES (:k, 'payload');\n`,
    );
    await sql(url, `TRUNCATE ${table}, ${Q}`);
    const out = execFileSync(
      `${pg.binDir}/pgbench`,
      ['-n', '-f', join(dir, `${name}.sql`), '-c', '8', '-j', '2', '-T', '5', '-M', 'prepared', url],
      { encoding: 'utf8' },
    );
    res[name] = [...(res[name] ?? []), Number(/tps = ([\d.]+)/.exec(out)![1])];
  }
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[1]!;
for (const [k, v] of Object.entries(res))
  console.log(k.padEnd(22), Math.round(med(v)), (med(v) / med(res.plain!)).toFixed(2), v.map(Math.round).join('/'));
const plan = await sql(url, `EXPLAIN (ANALYZE, BUFFERS, WAL) INSERT INTO src (k, payload) VALUES (1, 'payload')`);
console.log(plan.map((r) => r['QUERY PLAN']).join('\n'));
await releasePollLock();
await pg.stop();

// Schedules fire the one function they name, through the normal event path,
// with started_at/finished_at/error_msg kept on the rppd_cron row.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Fixture, setupFixture, waitForMaster, waitForRows } from '../support/fixture.ts';
import { waitFor } from '../support/waitFor.ts';

describe('rppd_cron', () => {
  let f: Fixture;
  before(async () => {
    f = await setupFixture();
    await f.db.query(`
      CREATE TABLE ticker (id int PRIMARY KEY, ticks int DEFAULT 0);
      CREATE TABLE ticks (id serial PRIMARY KEY, fn text, cron_id int, value text);`);
    await waitForMaster(await f.startNode());
  });
  after(async () => f?.close());

  test('an every-second schedule fires its function (and not the others of the table)', async () => {
    const [fn] = await f.query<{ id: number }>(
      `INSERT INTO rppd_function (code, checksum, schema_table) VALUES ($1, 'na', 'public.ticker') RETURNING id`,
      [
        `cur = DB.cursor()\ncur.execute("INSERT INTO ticks (fn, cron_id, value) VALUES ('scheduled', %s, %s)", (NEW['rppd_cron_id'], NEW['ticks']))\nDB.commit()`,
      ],
    );
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang) VALUES ($1, 'na', 'public.ticker', 'js')`,
      [`export default async (e, ctx) => { await ctx.db.query("INSERT INTO ticks (fn) VALUES ('other')"); };`],
    );
    const [cron] = await f.query<{ id: number }>(
      `INSERT INTO rppd_cron (fn_id, cron, column_name, column_value) VALUES ($1, '* * * * * *', 'ticks', '1') RETURNING id`,
      [fn!.id],
    );
    const rows = await waitForRows<{ fn: string; cron_id: number; value: string }>(
      f,
      `SELECT fn, cron_id, value FROM ticks ORDER BY id`,
      2,
    );
    assert.ok(rows.every((r) => r.fn === 'scheduled' && r.cron_id === cron!.id && r.value === '1'));
    const [row] = await waitForRows<{ started_at: Date; finished_at: Date; error_msg: string | null }>(
      f,
      'SELECT started_at, finished_at, error_msg FROM rppd_cron WHERE id = $1 AND finished_at IS NOT NULL',
      1,
      [cron!.id],
    );
    assert.equal(row!.error_msg, null);
    assert.ok(row!.finished_at >= row!.started_at);
    await f.db.query('DELETE FROM rppd_cron WHERE id = $1', [cron!.id]);
  });

  test('a failing scheduled function records its error on the schedule row', async () => {
    const [fn] = await f.query<{ id: number }>(
      `INSERT INTO rppd_function (code, checksum, schema_table) VALUES ('raise Exception("cron boom")', 'na', 'public.nothing') RETURNING id`,
    );
    const [cron] = await f.query<{ id: number }>(
      `INSERT INTO rppd_cron (fn_id, cron, column_name) VALUES ($1, '* * * * * *', 'x') RETURNING id`,
      [fn!.id],
    );
    const [row] = await waitForRows<{ error_msg: string }>(
      f,
      `SELECT error_msg FROM rppd_cron WHERE id = $1 AND error_msg LIKE '%cron boom%'`,
      1,
      [cron!.id],
    );
    assert.match(row!.error_msg, /^Exception: cron boom/);
    await f.db.query('DELETE FROM rppd_cron WHERE id = $1', [cron!.id]);
  });

  test('an invalid expression is reported on the row and fixed live', async () => {
    const [fn] = await f.query<{ id: number }>(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang) VALUES ($1, 'na', 'public.nothing2', 'js') RETURNING id`,
      [`export default async (e, ctx) => { await ctx.db.query("INSERT INTO ticks (fn) VALUES ('fixed')"); };`],
    );
    const [cron] = await f.query<{ id: number }>(
      `INSERT INTO rppd_cron (fn_id, cron, column_name) VALUES ($1, 'not a cron', 'x') RETURNING id`,
      [fn!.id],
    );
    await waitForRows(f, `SELECT 1 FROM rppd_cron WHERE id = $1 AND error_msg LIKE 'invalid cron expression%'`, 1, [
      cron!.id,
    ]);
    await f.db.query(`UPDATE rppd_cron SET cron = '* * * * * *' WHERE id = $1`, [cron!.id]);
    await waitForRows(f, `SELECT 1 FROM ticks WHERE fn = 'fixed'`, 1);
    await waitFor(
      async () => (await f.query('SELECT 1 FROM rppd_cron WHERE id = $1 AND error_msg IS NULL', [cron!.id])).length,
      {
        what: 'error cleared',
      },
    );
  });
});

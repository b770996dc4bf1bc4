// The demo `rppd dev` sets up: a source table with the rppd trigger, a sink
// table, and one Python and one JavaScript function writing into the sink.
import type pg from 'pg';
import { quoteIdent } from '../db/ident.ts';

export const demoPython = `# Python: runs for every change of public.demo_source (topic '.id': one queue per row)
cur = DB.cursor()
cur.execute("SELECT input FROM demo_source WHERE id = %s", (ID,))
row = cur.fetchone()
if row:
    cur.execute("INSERT INTO demo_sink (source_id, lang, data) VALUES (%s, 'python', %s)", (ID, row[0].upper()))
    DB.commit()
print("python saw", TABLE, TRIG, PK)
`;

export const demoJs = `// JavaScript: an ES module whose default export runs per event
export default async function (event, ctx) {
  if (event.op === 'DELETE') return;
  const { rows } = await ctx.db.query('SELECT input FROM demo_source WHERE id = $1', [event.key.id]);
  if (rows[0]) {
    await ctx.db.query("INSERT INTO demo_sink (source_id, lang, data) VALUES ($1, 'js', $2)", [event.key.id, rows[0].input.length + ' chars']);
  }
  console.log('js saw', event.table, event.op, event.key);
}
`;

export async function installDemo(client: pg.ClientBase, schema: string): Promise<void> {
  const s = quoteIdent(schema);
  await client.query(`
    CREATE TABLE IF NOT EXISTS public.demo_source (id serial PRIMARY KEY, input text NOT NULL, created_at timestamptz DEFAULT now());
    CREATE TABLE IF NOT EXISTS public.demo_sink (id serial PRIMARY KEY, source_id int, lang text, data text, created_at timestamptz DEFAULT now());
    DROP TRIGGER IF EXISTS demo_source_event ON public.demo_source;
    CREATE TRIGGER demo_source_event AFTER INSERT OR UPDATE OR DELETE ON public.demo_source
      FOR EACH ROW EXECUTE FUNCTION ${s}.rppd_event();`);
  const existing = await client.query(`SELECT 1 FROM ${s}.rppd_function WHERE schema_table = 'public.demo_source'`);
  if (existing.rowCount) return;
  await client.query(
    `INSERT INTO ${s}.rppd_function (code, checksum, schema_table, topic, lang, fn_logging)
     VALUES ($1, 'demo', 'public.demo_source', '.id', 'python', true),
            ($2, 'demo', 'public.demo_source', '', 'js', true)`,
    [demoPython, demoJs],
  );
}

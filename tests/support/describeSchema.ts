// The schema rppd creates, described from the catalog in a stable text form: what the
// snapshot test compares with extension/schema.snapshot.txt and the upgrade test with a
// fresh install.
import type pg from 'pg';

export async function describeSchema(client: pg.Client, schema: string): Promise<string> {
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
      'tables',
      await q(`SELECT c.relname, c.relkind, coalesce(array_to_string(c.reloptions, ', '), '') FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'S') ORDER BY 1`),
    ],
    [
      'grants to PUBLIC',
      await q(`SELECT c.relname, a.privilege_type FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                      aclexplode(c.relacl) a
                WHERE n.nspname = $1 AND a.grantee = 0 ORDER BY 1, 2`),
    ],
    [
      'functions',
      await q(`SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') ' || pg_get_function_result(p.oid)
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY 1`),
    ],
  ];
  return `${sections.map(([name, rows]) => `## ${name}\n${rows.join('\n')}`).join('\n\n')}\n`;
}

/** Source of every function in the schema, with the schema name (make it distinctive) replaced by @extschema@. */
export async function functionSources(client: pg.Client, schema: string): Promise<Record<string, string>> {
  const { rows } = await client.query<{ sig: string; src: string }>(
    `SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS sig, p.prosrc AS src
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY 1`,
    [schema],
  );
  return Object.fromEntries(rows.map((r) => [r.sig, r.src.replaceAll(schema, '@extschema@')]));
}

// Identifiers are quoted once, here; values always travel as $n parameters.

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** "schema"."table" from 'schema.table' (a bare name means public). */
export function quoteQualified(schemaTable: string): string {
  const { schema, table } = splitQualified(schemaTable);
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

export function splitQualified(schemaTable: string): { schema: string; table: string } {
  const dot = schemaTable.indexOf('.');
  if (dot < 0) return { schema: 'public', table: schemaTable };
  return { schema: schemaTable.slice(0, dot), table: schemaTable.slice(dot + 1) };
}

/** rppd's own tables: schema-qualified and quoted. */
export function rppdTable(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

// PostgreSQL's reserved key words (those that cannot be a bare schema name).
const reserved = new Set(
  (
    'all analyse analyze and any array as asc asymmetric both case cast check collate column constraint create ' +
    'current_catalog current_date current_role current_time current_timestamp current_user default deferrable desc ' +
    'distinct do else end except false fetch for foreign from grant group having in initially intersect into lateral ' +
    'leading limit localtime localtimestamp not null offset on only or order placing primary references returning ' +
    'select session_user some symmetric system_user table then to trailing true union unique user using variadic when ' +
    'where window with authorization binary collation concurrently cross current_schema freeze full ilike inner is ' +
    'isnull join left like natural notnull outer overlaps right similar tablesample verbose'
  ).split(' '),
);

/** Quoted only when needed, like PostgreSQL's quote_ident (and its @extschema@ substitution). */
export function quoteIdentIfNeeded(name: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(name) && !reserved.has(name) ? name : quoteIdent(name);
}

/** Undo quoteIdentIfNeeded: the schema name as a payload carries it. */
export function unquoteIdent(text: string): string {
  return text.startsWith('"') && text.endsWith('"') ? text.slice(1, -1).replace(/""/g, '"') : text;
}

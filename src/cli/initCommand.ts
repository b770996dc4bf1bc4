// rppd init [schema] [url]: install or upgrade rppd (idempotent).
import pg from 'pg';
import { parseDbArgs } from '../config/resolveSettings.ts';
import { installSchema } from '../db/installSchema.ts';
import { UsageError } from '../util/errors.ts';

export async function runInit(argv: string[]): Promise<number> {
  let mode: 'auto' | 'sql' | 'extension' = 'auto';
  const rest = argv.filter((a) => {
    if (a === '--sql' || a === '--extension') {
      if (mode !== 'auto') throw new UsageError(`${a}: choose one of --sql and --extension`);
      mode = a === '--sql' ? 'sql' : 'extension';
      return false;
    }
    return true;
  });
  const { schema, url, urlRedacted } = parseDbArgs(rest, process.env);
  const client = new pg.Client({ connectionString: url, application_name: 'rppd init' });
  await client.connect().catch((err: unknown) => {
    throw new Error(`cannot connect to ${urlRedacted}`, { cause: err });
  });
  try {
    const result = await installSchema(client, schema, { mode });
    const what = result.changed
      ? result.from
        ? `upgraded rppd ${result.from} → ${result.to}`
        : `installed rppd ${result.to}`
      : `rppd ${result.to} is already installed`;
    console.log(
      `${what} in schema "${schema}" of ${urlRedacted} (${result.mode === 'extension' ? 'CREATE EXTENSION' : 'plain SQL'})`,
    );
    return 0;
  } finally {
    await client.end();
  }
}

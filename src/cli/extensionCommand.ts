// rppd extension install: copy rppd.control and the SQL files into the server's
// share directory, so that CREATE EXTENSION rppd works there.
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { copyExtensionFiles } from '../db/extensionFiles.ts';
import { UsageError } from '../util/errors.ts';

export async function runExtension(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'install') throw new UsageError(`extension: unknown subcommand "${sub ?? ''}" (expected "install")`);
  let values: { sharedir?: string; 'pg-config'?: string };
  try {
    ({ values } = parseArgs({
      args: rest,
      options: { sharedir: { type: 'string' }, 'pg-config': { type: 'string' } },
      strict: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const shareDir =
    values.sharedir ?? execFileSync(values['pg-config'] ?? 'pg_config', ['--sharedir'], { encoding: 'utf8' }).trim();
  for (const file of copyExtensionFiles(shareDir)) console.log(`copied ${file}`);
  console.log('now: CREATE EXTENSION rppd [SCHEMA s]; (or: rppd init)');
  return 0;
}

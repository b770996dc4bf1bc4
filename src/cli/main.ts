// rppd's command line: parse, pick the command, map errors to exit codes.
// No business logic here.

import { usage } from '../config/usage.ts';
import { describeError, UsageError } from '../util/errors.ts';
import { VERSION } from '../version.ts';

const help = `rppd ${VERSION}: run Python and JavaScript/TypeScript functions when rows change in PostgreSQL

Usage:
  rppd init [schema] [postgres://…] [--sql | --extension]      install or upgrade rppd in a database
  rppd start [schema] [postgres://…] [host:port] [config file or dir] [--name=NAME] [--verbose]
  rppd dev [--reset]        embedded PostgreSQL + demo functions + a node (no setup needed)
  rppd extension install [--sharedir=DIR | --pg-config=PATH]   copy the extension files for CREATE EXTENSION
  rppd version | help

Settings: env > arguments > config file > defaults. See docs/configuration.md.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    // Commands load lazily: each pulls in only what it needs.
    case 'start':
      return (await import('./startCommand.ts')).runStart(rest);
    case 'init':
      return (await import('./initCommand.ts')).runInit(rest);
    case 'dev':
      return (await import('./devCommand.ts')).runDev(rest);
    case 'extension':
      return (await import('./extensionCommand.ts')).runExtension(rest);
    case 'version':
    case '--version':
      console.log(VERSION);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(help);
      return 0;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      const command = process.argv[2];
      console.error(`rppd: ${err.message}`);
      console.error(command === 'start' || command === 'init' ? usage(command) : help);
      process.exit(2);
    }
    console.error(`rppd: ${describeError(err)}`);
    process.exit(1);
  },
);

// Usage text of the commands that take node settings; the settings part is generated from DEFS, so it
// cannot drift from what resolveSettings reads. docs/configuration.md says the same at length.

import { CONFIG_FILE_NAME } from './readConfigFile.ts';
import { DEFAULT_PORT, DEFS, SETTING_KEYS } from './settings.ts';

const SOURCES = `Each setting is taken from the first of: environment, arguments, config file, default.`;

const CREDENTIALS = `Credentials:
  PGUSER, PGPASSWORD            replace the user / password of the URL (URL-encoded for you)
  PGUSER_FILE, PGPASSWORD_FILE  or name a file holding the value
  Default URL: postgres://<user>@localhost:5432/<user>, where <user> is PGUSER, else $USER, else postgres.`;

const CONFIG_FILE = `Config file: any text file of "key = value" or "key: value" lines (INI, YAML-ish and .env styles work;
lines starting with # ; / [ are skipped; unknown keys are reported and ignored), or a directory holding
${CONFIG_FILE_NAME}. A positional argument that names an existing file or directory is the config file.`;

function settingsTable(keys: readonly string[]): string {
  const rows = SETTING_KEYS.filter((key) => keys.includes(key)).map((key) => {
    const d = DEFS[key];
    return [key, d.env.join(', ') + (d.secret ? `, ${d.env[0]}_FILE` : ''), `${d.doc} [${d.defaultText}]`];
  });
  rows.unshift(['file key', 'environment', 'meaning [default]']);
  const width = (column: number) => Math.max(...rows.map((row) => row[column]!.length)) + 2;
  const [keyWidth, envWidth] = [width(0), width(1)];
  return rows.map(([key, env, doc]) => `  ${key!.padEnd(keyWidth)}${env!.padEnd(envWidth)}${doc}`).join('\n');
}

const START = `Usage: rppd start [schema] [postgres://url] [host:port] [config file or dir] [--name=NAME] [--config=PATH] [--verbose]

Runs one node. The positional arguments may come in any order:
  schema         schema of rppd's tables, e.g. rppd or rppd. (default public)
  postgres://…   database URL (postgresql:// too)
  host:port      where other nodes reach this node (default localhost:${DEFAULT_PORT}); :8882, 10.0.0.5:8882, [::1]:8882
  --name=NAME    node name shown in rppd_config (default the host name; at most 64 characters)
  --config=PATH  config file, or a directory holding ${CONFIG_FILE_NAME}
  --verbose      log at debug level and print where each setting came from

${SOURCES}
${settingsTable(SETTING_KEYS)}

${CREDENTIALS}

${CONFIG_FILE}`;

const INIT = `Usage: rppd init [schema] [postgres://url] [config file or dir] [--config=PATH] [--verbose]

Installs or upgrades rppd's tables in the schema (default public). The arguments may come in any order.

${SOURCES}
${settingsTable(['schema', 'url', 'log_level'])}

${CREDENTIALS}

${CONFIG_FILE}`;

const OVERVIEW = `Usage: rppd <command> [arguments]

  rppd init [schema] [postgres://url]               install or upgrade rppd's tables
  rppd start [schema] [postgres://url] [host:port]  run a node; start as many as you like, one becomes master`;

/** Usage of one command; the overview for any other. */
export function usage(command?: 'start' | 'init' | (string & {})): string {
  if (command === 'start') return START;
  if (command === 'init') return INIT;
  return OVERVIEW;
}

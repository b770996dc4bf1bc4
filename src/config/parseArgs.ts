// Command-line arguments of `rppd start` / `rppd init`: positionals in any order, told apart by their form.
// Unlike the original (docs spec §4.2), no environment variable ever consumes an argument: every
// argument is classified here, and precedence is applied later, per setting, in resolveSettings.

import { UsageError } from '../util/errors.ts';
import { locateConfigFile } from './readConfigFile.ts';
import { redactUrl } from './settings.ts';

/** An argument's value with the words that name it in an error, e.g. `bind "h:0" (argument 2)`. */
export interface ArgValue {
  value: string;
  label: string;
}

export interface ParsedArgs {
  schema?: ArgValue;
  url?: ArgValue;
  bind?: ArgValue;
  name?: ArgValue;
  /** Absolute path of the file (for a directory: its rppd.rppd_config). */
  configFile?: ArgValue;
  /** Set when --verbose was given. */
  verbose?: ArgValue;
}

/** `node`: rppd start (schema, URL, bind, --name). `db`: rppd init (schema and URL only). */
export type ArgsMode = 'node' | 'db';

type Kind = 'schema' | 'url' | 'bind' | 'configFile';

const PLURAL: Record<Kind | 'name', string> = {
  schema: 'schemas',
  url: 'URLs',
  bind: 'host:port binds',
  configFile: 'config files',
  name: '--name options',
};

/** The kind of a positional argument, and for a config file its path. */
function classify(arg: string, where: string, cwd: string): { kind: Kind; file?: string } {
  if (/^postgres(ql)?:\/\//i.test(arg)) return { kind: 'url' };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) {
    throw new UsageError(`${where} "${redactUrl(arg)}" is a URL but not postgres:// or postgresql://`);
  }
  const file = locateConfigFile(arg, cwd, `${where} "${arg}"`);
  if (file !== undefined) return { kind: 'configFile', file };
  if (arg.includes(':') || arg.startsWith('[')) return { kind: 'bind' };
  if (/[/\\]/.test(arg)) throw new UsageError(`${where} "${arg}" names no existing file or directory`);
  if (/^\d+$/.test(arg)) {
    throw new UsageError(`${where} "${arg}" is not a schema, URL or host:port (for a port, write ":${arg}")`);
  }
  return { kind: 'schema' };
}

export function parseArgs(argv: readonly string[], opts: { cwd: string; mode?: ArgsMode }): ParsedArgs {
  const mode = opts.mode ?? 'node';
  const parsed: ParsedArgs = {};
  const maxPositionals = mode === 'node' ? 3 : 2;
  let positionals = 0;

  const set = (kind: Kind | 'name', value: ArgValue) => {
    const earlier = parsed[kind];
    if (earlier) throw new UsageError(`two ${PLURAL[kind]}: ${earlier.label} and ${value.label}`);
    parsed[kind] = value;
  };

  argv.forEach((arg, index) => {
    const where = `argument ${index + 1}`;
    if (arg.trim() === '') throw new UsageError(`${where} is empty`);

    if (arg.startsWith('-')) {
      const eq = arg.indexOf('=');
      const flag = eq < 0 ? arg : arg.slice(0, eq);
      const value = eq < 0 ? undefined : arg.slice(eq + 1);
      if (flag === '--verbose' && value === undefined) {
        parsed.verbose = { value: 'debug', label: `--verbose (${where})` };
      } else if ((flag === '--name' && mode === 'node') || flag === '--config') {
        if (!value) throw new UsageError(`${flag} (${where}) needs a value: ${flag}=${flag.slice(2).toUpperCase()}`);
        if (flag === '--name') {
          set('name', { value, label: `--name="${value}" (${where})` });
        } else {
          const file = locateConfigFile(value, opts.cwd, `--config="${value}" (${where})`);
          if (file === undefined) throw new UsageError(`--config="${value}" (${where}) names no existing file`);
          set('configFile', { value: file, label: `--config="${value}" (${where})` });
        }
      } else {
        throw new UsageError(`unknown option "${arg}" (${where})`);
      }
      return;
    }

    const { kind, file } = classify(arg, where, opts.cwd);
    if (file !== undefined) {
      set(kind, { value: file, label: `config file "${arg}" (${where})` });
      return;
    }
    if (mode === 'db' && kind === 'bind') {
      throw new UsageError(`"${arg}" (${where}) looks like a host:port; rppd init takes only a schema and a URL`);
    }
    positionals += 1;
    if (positionals > maxPositionals) {
      const allowed = mode === 'node' ? 'a schema, a URL and a host:port' : 'a schema and a URL';
      throw new UsageError(`too many arguments: "${arg}" (${where}); at most ${allowed}, plus a config file`);
    }
    const shown = kind === 'url' ? redactUrl(arg) : arg;
    set(kind, { value: arg, label: `${kind} "${shown}" (${where})` });
  });

  return parsed;
}

// The config file: "a text file in any format" (seed README). Each line is split at the first of `= : # ; / [`;
// only `=` and `:` make a `key = value` pair, so INI, YAML-ish and .env files all work, and a URL value
// (`url: postgres://u@h:5432/db`) keeps its own `:` and `/`.

import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UsageError } from '../util/errors.ts';
import { isSettingKey, SETTING_KEYS } from './settings.ts';

/** The file looked for when the config path is a directory. */
export const CONFIG_FILE_NAME = 'rppd.rppd_config';

export interface ConfigEntry {
  value: string;
  line: number;
}

export interface ConfigFile {
  /** Absolute path of the file read. */
  path: string;
  /** Known keys only, lower-case (`secret_file` included); the last line wins. */
  entries: ReadonlyMap<string, ConfigEntry>;
  warnings: string[];
}

const SPECIAL = /[=:#;/[]/;

/** Keys read besides the settings themselves. */
const EXTRA_KEYS = new Set(['secret_file']);
/** Other spellings of a key: `.env` files written for the environment variables work too. */
const ALIASES: Record<string, string> = { database_url: 'url' };

function normaliseKey(raw: string): string {
  let key = raw.trim().toLowerCase();
  if (key.startsWith('export ')) key = key.slice('export '.length).trim();
  if (ALIASES[key]) return ALIASES[key];
  if (key.startsWith('rppd_')) {
    const bare = key.slice('rppd_'.length);
    if (isSettingKey(bare) || EXTRA_KEYS.has(bare)) return bare;
  }
  return key;
}

function unquote(value: string): string {
  const first = value[0];
  if (value.length >= 2 && (first === '"' || first === "'") && value.endsWith(first)) return value.slice(1, -1);
  return value;
}

/** Pure: the pairs of a config file's text. `label` names the file in warnings. */
export function parseConfigText(
  text: string,
  label: string,
): { entries: Map<string, ConfigEntry>; warnings: string[] } {
  const entries = new Map<string, ConfigEntry>();
  const warnings: string[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((lineText, index) => {
    const line = index + 1;
    const at = lineText.search(SPECIAL);
    if (at < 0 || (lineText[at] !== '=' && lineText[at] !== ':')) return;
    const key = normaliseKey(lineText.slice(0, at));
    const value = unquote(lineText.slice(at + 1).trim());
    // `key:` alone is a YAML section header, not a setting.
    if (key === '' || value === '') return;
    if (!isSettingKey(key) && !EXTRA_KEYS.has(key)) {
      warnings.push(`${label} line ${line}: unknown key "${key}" ignored`);
      return;
    }
    const earlier = entries.get(key);
    if (earlier) warnings.push(`${label} line ${line}: "${key}" repeats line ${earlier.line}; line ${line} is used`);
    entries.set(key, { value, line });
  });
  return { entries, warnings };
}

/**
 * The config file a path names: the path itself, or `<dir>/rppd.rppd_config` for a directory.
 * Undefined when nothing exists there. `where` names the argument in the error for a directory without the file.
 */
export function locateConfigFile(given: string, cwd: string, where: string): string | undefined {
  const path = resolve(cwd, given);
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) return undefined;
  if (!stat.isDirectory()) return path;
  const inside = join(path, CONFIG_FILE_NAME);
  if (!statSync(inside, { throwIfNoEntry: false })?.isFile()) {
    throw new UsageError(
      `${where} is a directory without ${CONFIG_FILE_NAME}` +
        (/^[A-Za-z_][A-Za-z0-9_$]*$/.test(given) ? ` (for the schema ${given}, write "${given}.")` : ''),
    );
  }
  return inside;
}

export function readConfigFile(path: string, where: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`config file ${path} (${where}) cannot be read: ${(err as Error).message}`, { cause: err });
  }
  const label = `config file ${path}`;
  const { entries, warnings } = parseConfigText(text, label);
  if (entries.size === 0) {
    throw new UsageError(
      `${label} (${where}) has no rppd setting: expected lines like "schema = rppd" with keys ${SETTING_KEYS.join(', ')}`,
    );
  }
  return { path, entries, warnings };
}

// The node's view of rppd_function, reloaded whenever the table changes (NOTIFY)
// and on a slow poll. Keyed by table, so '' and '.col' never cross tables.
import type pg from 'pg';
import { type FunctionRow, functionsVersion, loadFunctions, primaryKeyColumns } from '../db/queries/functions.ts';
import { type RegisteredFunction, toFunctionDef } from './planRuns.ts';

export interface FunctionRegistry {
  reload(): Promise<number>;
  /** Reload unless what is loaded is at least `version` (rppd_wake.functions_version). */
  ensureVersion(version: bigint): Promise<void>;
  version(): bigint;
  forTable(schemaTable: string): readonly RegisteredFunction[];
  byId(id: number): RegisteredFunction | undefined;
  /** Primary-key columns per table, read once per table after every reload. */
  pkColumns(tables: Iterable<string>): Promise<Map<string, string[]>>;
  all(): readonly RegisteredFunction[];
}

export function makeFunctionRegistry(pool: pg.Pool, schema: string): FunctionRegistry {
  let byTable = new Map<string, RegisteredFunction[]>();
  let byId = new Map<number, RegisteredFunction>();
  let list: RegisteredFunction[] = [];
  let pkCache = new Map<string, string[]>();
  let loadedVersion = -1n;
  let loading: Promise<number> | null = null;

  async function load(): Promise<number> {
    const version = await functionsVersion(pool, schema);
    build(await loadFunctions(pool, schema));
    if (version > loadedVersion) loadedVersion = version;
    return byId.size;
  }

  function build(rows: FunctionRow[]): void {
    const nextByTable = new Map<string, RegisteredFunction[]>();
    const nextById = new Map<number, RegisteredFunction>();
    // rows come ordered by priority, then id: the order runs of one event take.
    for (const row of rows) {
      const fn: RegisteredFunction = { def: toFunctionDef(row), priority: row.priority, queue: row.queue };
      nextById.set(row.id, fn);
      const list = nextByTable.get(row.schema_table);
      if (list) list.push(fn);
      else nextByTable.set(row.schema_table, [fn]);
    }
    byTable = nextByTable;
    byId = nextById;
    list = [...nextById.values()];
    pkCache = new Map();
  }

  return {
    reload() {
      // Concurrent callers share one load; a load already running may predate the change, so chain.
      const next: Promise<number> = (loading ?? Promise.resolve(0)).catch(() => 0).then(load);
      loading = next;
      void next
        .finally(() => {
          if (loading === next) loading = null;
        })
        .catch(() => undefined);
      return next;
    },
    async ensureVersion(version) {
      if (loadedVersion < version) await this.reload();
    },
    version: () => loadedVersion,
    forTable: (t) => byTable.get(t) ?? [],
    byId: (id) => byId.get(id),
    all: () => list,
    async pkColumns(tables) {
      const cache = pkCache;
      for (const t of tables) {
        if (!cache.has(t)) cache.set(t, await primaryKeyColumns(pool, t));
      }
      return cache;
    },
  };
}

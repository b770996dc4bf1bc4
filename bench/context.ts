// What every workload gets: the server, the options, the systems, and where results go.
import { quoteIdent } from '../src/db/ident.ts';
import type { PgServer } from '../tests/support/pgServer.ts';
import { BENCH_TABLES, sql } from './db.ts';
import { type LoadMeter, loadMeter } from './measure.ts';
import type { BenchOptions } from './options.ts';
import { printRow, type ResultRow } from './report.ts';
import { graphileWorker } from './systems/graphileWorker.ts';
import { pgBoss } from './systems/pgBoss.ts';
import { rppd } from './systems/rppd.ts';
import type { BenchSystem } from './systems/system.ts';

export interface BenchContext {
  pg: PgServer;
  options: BenchOptions;
  /** rppd first, then the peers. */
  systems: readonly BenchSystem[];
  results: ResultRow[];
  /** Markdown sections appended to the results file (profiles, plans). */
  extraMarkdown: string[];
  /** Raw data kept in the JSON file (slices, samples). */
  data: Record<string, unknown>;
  notes: string[];
  record(row: ResultRow): ResultRow;
  /** A new database on the shared server with src and sink; returns its URL. */
  freshDb(label: string): Promise<string>;
  /**
   * Drop a database once its run is measured: left in place, its dead rows (a drained queue)
   * keep autovacuum busy during the next run, a different amount each time.
   */
  dropDb(url: string): Promise<void>;
  find(workload: string, system: string, metric: string, caseName?: string): ResultRow | undefined;
  log(message: string): void;
  /** Starts measuring the CPU other processes on the machine use (it is shared). */
  meter(): LoadMeter;
}

export function makeContext(pg: PgServer, options: BenchOptions): BenchContext {
  let n = 0;
  const started = Date.now();
  const ctx: BenchContext = {
    pg,
    options,
    systems: [rppd, graphileWorker, pgBoss].filter((s) => options.systems.has(s.name)),
    results: [],
    extraMarkdown: [],
    data: {},
    notes: [],
    record(row) {
      ctx.results.push(row);
      printRow(row);
      return row;
    },
    async freshDb(label) {
      const name = `${label.toLowerCase().replace(/[^a-z0-9]+/g, '_')}_${++n}`;
      const url = await pg.createDatabase(name);
      await sql(url, BENCH_TABLES);
      return url;
    },
    async dropDb(url) {
      const name = decodeURIComponent(new URL(url).pathname.slice(1));
      // A logical slot of the database (rppd's WAL capture) would keep it from being dropped.
      await sql(pg.url, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1', [
        name,
      ]);
      await sql(pg.url, `DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
    },
    find(workload, system, metric, caseName) {
      return ctx.results.find(
        (r) =>
          r.workload === workload &&
          r.system === system &&
          r.metric === metric &&
          (caseName === undefined || r.case === caseName),
      );
    },
    meter: () => loadMeter(() => [pg.dataDir]),
    log(message) {
      const t = ((Date.now() - started) / 1000).toFixed(0).padStart(5);
      console.log(`[${t}s] ${message}`);
    },
  };
  return ctx;
}

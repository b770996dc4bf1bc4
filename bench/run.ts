// `npm run bench` entry: installs the peers on first run, starts one PostgreSQL with default
// durability, runs the chosen workloads (each system in its own fresh database), prints the
// results and writes them to bench/results/<stamp>.json and .md. See bench/README.md.
import { execFileSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VERSION } from '../src/version.ts';
import { startPg } from '../tests/support/pgServer.ts';
import { type BenchContext, makeContext } from './context.ts';
import { type BenchOptions, parseOptions, type WorkloadId } from './options.ts';
import { type RunInfo, writeResults } from './report.ts';
import { ensurePeers } from './setup.ts';
import { runProfile } from './workloads/profile.ts';
import { runW1 } from './workloads/w1WriteOverhead.ts';
import { runW2 } from './workloads/w2Throughput.ts';
import { runW3 } from './workloads/w3Latency.ts';
import { runW4 } from './workloads/w4Python.ts';
import { runW5 } from './workloads/w5Ordered.ts';
import { runW6 } from './workloads/w6Backlog.ts';

const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');

const RUNNERS: Record<WorkloadId, (ctx: BenchContext) => Promise<void>> = {
  W1: runW1,
  W2: runW2,
  W3: runW3,
  W4: runW4,
  W5: runW5,
  W6: runW6,
  P: runProfile,
};

function stamp(date: Date, quick: boolean): string {
  const iso = date.toISOString();
  return `${iso.slice(0, 10)}-${iso.slice(11, 16).replace(':', '')}${quick ? '-quick' : ''}`;
}

async function main(options: BenchOptions, argv: string[]): Promise<number> {
  const startedAt = new Date();
  const versions: Record<string, string> = { rppd: VERSION, ...ensurePeers() };
  // wal_level = logical for every line: rppd's WAL-capture lines need it, and the others then
  // run on the same server. With no slot it adds nothing to an INSERT's WAL.
  // Checkpoints and autovacuum runs are logged, so that W3 can list those that fell in a round.
  const pg = await startPg({
    durable: true,
    settings: { wal_level: 'logical', log_checkpoints: 'on', log_autovacuum_min_duration: 0 },
  });
  const postgres = execFileSync(join(pg.binDir, 'postgres'), ['--version'], { encoding: 'utf8' }).trim();
  const ctx = makeContext(pg, options);
  const info: RunInfo = {
    startedAt: startedAt.toISOString(),
    quick: options.quick,
    argv,
    machine: {
      cpus: cpus().length,
      memGb: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      peerNode: versions['peer node'] ?? '?',
      postgres,
    },
    versions,
    sizes: options.sizes,
    notes: ctx.notes,
  };
  ctx.notes.push(
    'server: wal_level = logical for every line (the rppd WAL-capture lines need it); only their databases have a slot',
  );
  let failed = 0;
  const save = () => {
    info.finishedAt = new Date().toISOString();
    info.durationSec = (Date.now() - startedAt.getTime()) / 1000;
    return writeResults(resultsDir, stamp(startedAt, options.quick), info, ctx.results, {
      markdown: ctx.extraMarkdown,
      data: ctx.data,
    });
  };
  try {
    for (const id of Object.keys(RUNNERS) as WorkloadId[]) {
      if (!options.only.has(id)) continue;
      const t0 = Date.now();
      ctx.log(`=== ${id} ===`);
      try {
        await RUNNERS[id](ctx);
      } catch (err) {
        failed++;
        const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
        ctx.notes.push(`${id} failed: ${message.split('\n')[0]}`);
        console.error(`${id} failed: ${message}`);
      }
      ctx.log(`${id} took ${Math.round((Date.now() - t0) / 1000)} s`);
      save();
    }
  } finally {
    await pg.stop();
  }
  const files = save();
  console.log(`\nresults: ${files.md}\n         ${files.json}`);
  return failed ? 1 : 0;
}

// Every spawned server and worker adds an exit hook that kills it if the bench dies.
process.setMaxListeners(100);
const argv = process.argv.slice(2);
main(parseOptions(argv), argv).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  },
);

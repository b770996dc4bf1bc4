// The chaos harness: three node processes and a real PostgreSQL, a stream of ordered
// (topic '.k', queue = true) and unordered events, and while it flows: SIGKILL of the
// master, SIGKILL of a worker, an immediate PostgreSQL restart. Then it counts what
// every source row left behind. `npm run chaos` runs the full form (chaos.ts), the
// test suite a short one (chaos.test.ts).
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { type Fixture, setupFixture } from '../support/fixture.ts';
import type { RppdProcess } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';

export type ChaosAction = 'kill-master' | 'kill-worker' | 'restart-pg';

export interface ChaosOptions {
  orderedKeys: number;
  orderedEvents: number;
  freeEvents: number;
  /** Source rows inserted per second (ordered and free together). */
  ratePerSec: number;
  /** In this order, spread over the run; each waits until the cluster dispatches again. */
  actions: ChaosAction[];
  maxDbConnections: number;
  /** How long the whole run may take before it fails. */
  timeoutMs: number;
  log: (line: string) => void;
}

export interface ActionReport {
  action: ChaosAction;
  /** ms after the start of the run */
  at: number;
  node?: string;
  /** kill-master: until another node holds the lease (as the harness polls it). */
  leaseMs?: number;
  /** kill-master: until the new master logged 'master: dispatching'. */
  dispatchingMs?: number;
  /** kill-worker: runs the master had on the worker (it retried them elsewhere)... */
  runsInFlight?: number;
  /** ...and until all of them were done. */
  redoneMs?: number;
  /** restart-pg: pg_ctl restart -m immediate took this long... */
  downMs?: number;
  /** ...and runs finished again this long after the restart began. */
  resumedMs?: number;
}

export interface ChaosReport {
  events: number;
  ordered: number;
  free: number;
  keys: number;
  lost: number;
  duplicates: number;
  orderViolations: number;
  overlaps: number;
  failedRuns: number;
  /** Node processes that exited without being killed by the harness. */
  crashes: number;
  actions: ActionReport[];
  durationMs: number;
}

const NAMES = ['chaos1', 'chaos2', 'chaos3'];
const BATCH = 100;

const orderedFn = `export default async (e, ctx) => {
  const { id, k, seq } = e.new;
  await ctx.db.query('BEGIN');
  try {
    // Another run of this key in a transaction right now = two runs of one queue at once.
    const { rows: [lock] } = await ctx.db.query('SELECT pg_try_advisory_xact_lock(7, $1) AS free', [k]);
    const { rows: [key] } = await ctx.db.query('SELECT last_seq FROM chaos_keys WHERE k = $1 FOR UPDATE', [k]);
    await new Promise((r) => setTimeout(r, 5)); // some work: runs are in flight when a node dies
    await ctx.db.query(
      'INSERT INTO chaos_ord_sink (src_id, k, seq, last_seq, overlap, pid) VALUES ($1, $2, $3, $4, $5, $6)',
      [id, k, seq, key.last_seq, !lock.free, process.pid]);
    if (seq > key.last_seq) await ctx.db.query('UPDATE chaos_keys SET last_seq = $2 WHERE k = $1', [k, seq]);
    await ctx.db.query('COMMIT');
  } catch (err) {
    await ctx.db.query('ROLLBACK').catch(() => {});
    throw err;
  }
};`;

const freeFn = `export default async (e, ctx) => {
  await ctx.db.query('INSERT INTO chaos_free_sink (src_id, pid) VALUES ($1, $2)', [e.new.id, process.pid]);
};`;

async function createSchema(f: Fixture, options: ChaosOptions): Promise<void> {
  await f.db.query(`
    CREATE TABLE chaos_ord (id bigserial PRIMARY KEY, k int NOT NULL, seq int NOT NULL, UNIQUE (k, seq));
    CREATE TABLE chaos_free (id bigserial PRIMARY KEY, batch int NOT NULL);
    CREATE TABLE chaos_batches (batch int PRIMARY KEY);
    CREATE TABLE chaos_keys (k int PRIMARY KEY, last_seq int NOT NULL DEFAULT 0);
    CREATE TABLE chaos_ord_sink (id bigserial PRIMARY KEY, src_id bigint, k int, seq int, last_seq int,
                                 overlap bool, pid int, at timestamptz DEFAULT clock_timestamp());
    CREATE TABLE chaos_free_sink (id bigserial PRIMARY KEY, src_id bigint, pid int);
    CREATE TRIGGER chaos_ord_event AFTER INSERT ON chaos_ord FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    CREATE TRIGGER chaos_free_event AFTER INSERT ON chaos_free FOR EACH ROW EXECUTE PROCEDURE rppd_event();
  `);
  await f.db.query('INSERT INTO chaos_keys (k) SELECT generate_series(0, $1 - 1)', [options.orderedKeys]);
  await f.db.query(
    `INSERT INTO rppd_function (code, checksum, schema_table, lang, topic, queue) VALUES
       ($1, 'na', 'chaos_ord', 'js', '.k', true), ($2, 'na', 'chaos_free', 'js', '', false)`,
    [orderedFn, freeFn],
  );
}

/** Batches of source rows, each in one transaction, retried after a lost connection without doubling. */
async function generate(pool: pg.Pool, options: ChaosOptions, stop: () => boolean): Promise<void> {
  const total = options.orderedEvents + options.freeEvents;
  const batches = Math.ceil(total / BATCH);
  const seq = new Map<number, number>();
  let ordered = 0;
  let free = 0;
  const started = performance.now();
  for (let b = 0; b < batches && !stop(); b++) {
    // Ordered and free rows in proportion, keys round-robin with a stride so neighbours differ.
    const wantOrdered = Math.round(((b + 1) * BATCH * options.orderedEvents) / total);
    const nOrd = Math.min(options.orderedEvents, wantOrdered) - ordered;
    const nFree = Math.min(options.freeEvents, (b + 1) * BATCH - ordered - nOrd - free);
    const ks: number[] = [];
    const ss: number[] = [];
    for (let i = 0; i < nOrd; i++) {
      const k = ((ordered + i) * 7) % options.orderedKeys;
      const s = (seq.get(k) ?? 0) + 1;
      seq.set(k, s);
      ks.push(k);
      ss.push(s);
    }
    for (let attempt = 0; ; attempt++) {
      const client = await pool.connect().catch(() => null);
      if (client) {
        // A checked-out client has no pool error listener: a server restart between two of its
        // queries is emitted as 'error', which would end the test instead of this retry.
        const ignore = () => undefined;
        client.on('error', ignore);
        try {
          await client.query('BEGIN');
          const done = await client.query('SELECT 1 FROM chaos_batches WHERE batch = $1', [b]);
          if (done.rows.length === 0) {
            await client.query('INSERT INTO chaos_batches VALUES ($1)', [b]);
            if (nOrd)
              await client.query('INSERT INTO chaos_ord (k, seq) SELECT * FROM unnest($1::int[], $2::int[])', [ks, ss]);
            if (nFree)
              await client.query('INSERT INTO chaos_free (batch) SELECT $1 FROM generate_series(1, $2)', [b, nFree]);
          }
          await client.query('COMMIT');
          client.off('error', ignore);
          client.release();
          break;
        } catch {
          client.off('error', ignore);
          client.release(true);
        }
      }
      await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** attempt)));
    }
    ordered += nOrd;
    free += nFree;
    // Pace: this many rows should exist by now.
    const due = ((ordered + free) / options.ratePerSec) * 1000 - (performance.now() - started);
    if (due > 0) await new Promise((r) => setTimeout(r, due));
  }
}

async function retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
  return waitFor(
    async () => {
      try {
        return { value: await fn() };
      } catch {
        return undefined;
      }
    },
    { timeoutMs: 120_000, what },
  ).then((r) => r.value);
}

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log;
  const f = await setupFixture();
  const pool = new pg.Pool({ connectionString: f.url, max: 4 });
  pool.on('error', () => undefined);
  const nodes = new Map<string, RppdProcess>();
  const spawned: RppdProcess[] = [];
  const killed = new Set<RppdProcess>();
  const actions: ActionReport[] = [];
  const env = { RPPD_LOG_LEVEL: 'info' };
  const start = async (name: string) => {
    const p = await f.startNode({ name, env });
    spawned.push(p);
    nodes.set(name, p);
    return p;
  };
  const kill = async (name: string) => {
    const p = nodes.get(name)!;
    killed.add(p);
    await p.kill('SIGKILL');
  };
  const started = performance.now();
  try {
    await createSchema(f, options);
    await Promise.all(NAMES.map(start));
    // Kept by a node that restarts under its name.
    await f.db.query('UPDATE rppd_config SET max_db_connections = $1', [options.maxDbConnections]);
    await f.db.end();
    const master = async () =>
      (
        await retrying('the master row', () =>
          pool.query<{ host_name: string; epoch: string }>(
            'SELECT host_name, epoch::text AS epoch FROM rppd_config WHERE master',
          ),
        )
      ).rows[0];
    await waitFor(master, { timeoutMs: 90_000, what: 'a master' });
    const total = options.orderedEvents + options.freeEvents;
    log(
      `chaos: ${total} events (${options.orderedEvents} ordered over ${options.orderedKeys} keys, ` +
        `${options.freeEvents} unordered) at ${options.ratePerSec}/s; actions: ${options.actions.join(', ')}`,
    );

    let generating = true;
    const generator = generate(pool, options, () => false).finally(() => {
      generating = false;
    });
    const processed = async () => {
      const { rows } = await retrying('progress', () =>
        pool.query<{ n: string }>(
          'SELECT (SELECT count(DISTINCT src_id) FROM chaos_ord_sink) + (SELECT count(DISTINCT src_id) FROM chaos_free_sink) AS n',
        ),
      );
      return Number(rows[0]?.n);
    };

    /** Runs finish again after `since`: the count of finished source rows grows. */
    const resumed = async (sinceMs: number) => {
      const base = await processed();
      await waitFor(async () => (await processed()) > base || (!generating && base >= total), {
        timeoutMs: 120_000,
        what: 'runs finishing again',
      });
      return Math.round(performance.now() - sinceMs);
    };

    for (let i = 0; i < options.actions.length; i++) {
      const action = options.actions[i]!;
      // Spread the actions between 10% and 80% of the events being done.
      const threshold = Math.floor(total * (0.1 + (0.7 * i) / Math.max(1, options.actions.length - 1)));
      await waitFor(async () => (await processed()) >= threshold, {
        timeoutMs: options.timeoutMs,
        what: `${threshold} events done`,
      });
      const at = Math.round(performance.now() - started);
      const report: ActionReport = { action, at };
      if (action === 'kill-master') {
        const old = (await master())!;
        const killedAt = Date.now();
        const t0 = performance.now();
        await kill(old.host_name);
        const next = await waitFor(
          async () => {
            const m = await master();
            return m && BigInt(m.epoch) > BigInt(old.epoch) ? m : undefined;
          },
          { timeoutMs: 60_000, what: 'a new master' },
        );
        report.leaseMs = Math.round(performance.now() - t0);
        const line = await nodes
          .get(next.host_name)!
          .waitForLog((l) => l.msg === 'master: dispatching' && (l.time as number) >= killedAt, 60_000);
        report.dispatchingMs = (line.time as number) - killedAt;
        report.node = old.host_name;
        await start(old.host_name);
      } else if (action === 'kill-worker') {
        const m = (await master())!;
        const name = NAMES.find((n) => n !== m.host_name)!;
        const killedAt = Date.now();
        const t0 = performance.now();
        await kill(name);
        // The master retries what it had there: its 'run will be retried' lines name the node.
        const retried = (l: { msg?: string; time?: unknown; error?: unknown }) =>
          l.msg === 'run will be retried' && (l.time as number) >= killedAt && String(l.error).includes(name);
        const masterProc = nodes.get(m.host_name)!;
        await masterProc.waitForLog(retried, 5_000).catch(() => undefined);
        const ids = [...new Set(masterProc.lines.filter(retried).map((l) => String(l.eventId)))];
        await waitFor(
          async () =>
            (await pool.query('SELECT 1 FROM rppd_event_queue WHERE id = ANY($1::bigint[])', [ids])).rows.length === 0,
          { timeoutMs: 120_000, what: `the runs of ${name} done elsewhere` },
        );
        report.runsInFlight = ids.length;
        report.redoneMs = Math.round(performance.now() - t0);
        report.node = name;
        await start(name);
      } else {
        const t0 = performance.now();
        await f.server.restart('immediate');
        report.downMs = Math.round(performance.now() - t0);
        report.resumedMs = await resumed(t0);
      }
      actions.push(report);
      log(`chaos: ${JSON.stringify(report)}`);
    }

    await generator;
    await waitFor(async () => (await processed()) >= total, {
      timeoutMs: options.timeoutMs,
      intervalMs: 500,
      what: `all ${total} events done`,
    });
    await waitFor(async () => (await pool.query('SELECT 1 FROM rppd_event_queue LIMIT 1')).rows.length === 0, {
      timeoutMs: 60_000,
      what: 'rppd_event_queue empty',
    });
    const durationMs = Math.round(performance.now() - started);

    const { rows } = await pool.query<Record<string, string>>(`
      SELECT
        (SELECT count(*) FROM chaos_ord o WHERE NOT EXISTS (SELECT 1 FROM chaos_ord_sink s WHERE s.src_id = o.id)) AS lost_ord,
        (SELECT count(*) FROM chaos_free o WHERE NOT EXISTS (SELECT 1 FROM chaos_free_sink s WHERE s.src_id = o.id)) AS lost_free,
        (SELECT count(*) - count(DISTINCT src_id) FROM chaos_ord_sink) AS dup_ord,
        (SELECT count(*) - count(DISTINCT src_id) FROM chaos_free_sink) AS dup_free,
        (SELECT count(*) FROM chaos_ord_sink WHERE seq > last_seq + 1) AS gaps,
        (SELECT count(*) FROM chaos_ord_sink WHERE overlap) AS overlaps,
        (SELECT count(*) FROM rppd_function_log WHERE error_msg IS NOT NULL) AS failed,
        (SELECT count(*) FROM chaos_ord) AS ordered, (SELECT count(*) FROM chaos_free) AS free`);
    const r = rows[0]!;
    return {
      events: Number(r.ordered) + Number(r.free),
      ordered: Number(r.ordered),
      free: Number(r.free),
      keys: options.orderedKeys,
      lost: Number(r.lost_ord) + Number(r.lost_free),
      duplicates: Number(r.dup_ord) + Number(r.dup_free),
      orderViolations: Number(r.gaps),
      overlaps: Number(r.overlaps),
      failedRuns: Number(r.failed),
      crashes: spawned.filter((p) => !killed.has(p) && (p.proc.exitCode !== null || p.proc.signalCode !== null)).length,
      actions,
      durationMs,
    };
  } finally {
    await pool.end().catch(() => undefined);
    await f.close();
  }
}

/** The figures as printed by `npm run chaos` and copied into docs/cluster.md. */
export function formatReport(r: ChaosReport): string {
  const lines = [
    `events          ${r.events} (${r.ordered} ordered over ${r.keys} keys, ${r.free} unordered)`,
    `lost            ${r.lost}`,
    `duplicates      ${r.duplicates} (runs repeated after a kill: at-least-once)`,
    `order violations ${r.orderViolations} (a key's run before its predecessor's)`,
    `overlaps        ${r.overlaps} (two runs of one ordered key at once)`,
    `failed runs     ${r.failedRuns}`,
    `node crashes    ${r.crashes}`,
    `duration        ${(r.durationMs / 1000).toFixed(1)} s`,
  ];
  for (const a of r.actions) {
    const node = a.node ? ` ${a.node}` : '';
    if (a.action === 'kill-master') {
      lines.push(
        `SIGKILL master${node} at ${a.at} ms: lease taken after ${a.leaseMs} ms, new master dispatching after ${a.dispatchingMs} ms`,
      );
    } else if (a.action === 'kill-worker') {
      lines.push(
        `SIGKILL worker${node} at ${a.at} ms: its ${a.runsInFlight} runs in flight done elsewhere after ${a.redoneMs} ms`,
      );
    } else {
      lines.push(
        `PostgreSQL restart -m immediate at ${a.at} ms: took ${a.downMs} ms, runs finishing again after ${a.resumedMs} ms`,
      );
    }
  }
  return lines.join('\n');
}

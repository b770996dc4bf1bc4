// Prometheus metrics, fed by the node's events (the observability seam).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { NodeEvents } from '../events/nodeEvents.ts';

export interface NodeMetrics {
  registry: Registry;
}

export function makeMetrics(
  events: NodeEvents,
  stats: () => {
    master: boolean;
    admitted: number;
    queued: number;
    writers_notify: boolean | null;
    running: number;
    workers: number;
    maxConcurrency: number;
    walStreaming: boolean;
  },
  /** Bytes of WAL the schema's slot holds unconfirmed (null: no slot); read at each scrape. */
  walSlotLag?: () => Promise<number | null>,
): NodeMetrics {
  const registry = new Registry();
  // The process: CPU (worker threads included), memory, heap, open files; the main thread's
  // event-loop delay (10 ms resolution; min/max/percentiles since the previous scrape) and its
  // garbage-collection pauses by kind: a stall of the master shows here, apart from the database's.
  collectDefaultMetrics({
    register: registry,
    eventLoopMonitoringPrecision: 10,
    gcDurationBuckets: [0.001, 0.005, 0.01, 0.025, 0.1, 0.5, 2],
  });
  const runs = new Counter({
    name: 'rppd_runs_total',
    help: 'Finished runs by function and result (ok, or the failure kind)',
    labelNames: ['fn_id', 'result'] as const,
    registers: [registry],
  });
  const retries = new Counter({
    name: 'rppd_run_retries_total',
    help: 'Runs retried after a transient failure',
    labelNames: ['fn_id'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'rppd_run_duration_seconds',
    help: 'Run time of functions',
    labelNames: ['fn_id'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
    registers: [registry],
  });
  const admitted = new Counter({
    name: 'rppd_events_admitted_total',
    help: "Events the master took into memory, by how: read (after its cursor), handover (from WAL capture as written), gap (a read's skipped id, re-read), sweep (committed after the cursor passed it: up to a second late)",
    labelNames: ['via'] as const,
    registers: [registry],
  });
  const completed = new Counter({
    name: 'rppd_events_completed_total',
    help: 'Events whose functions all finished (deleted from rppd_event_queue)',
    registers: [registry],
  });
  const dbErrors = new Counter({
    name: 'rppd_db_errors_total',
    help: 'Database errors by where they happened',
    labelNames: ['where'] as const,
    registers: [registry],
  });
  const leaseChanges = new Counter({
    name: 'rppd_lease_changes_total',
    help: 'Master lease acquired or lost by this node',
    labelNames: ['change'] as const,
    registers: [registry],
  });
  const wakeModeChanges = new Counter({
    name: 'rppd_wake_mode_changes_total',
    help: 'Switches of the master between waiting for NOTIFY and polling, by the new mode and why (src/dispatch/wakeMode.ts)',
    labelNames: ['mode', 'why'] as const,
    registers: [registry],
  });
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  const walEvents = new Counter({
    name: 'rppd_wal_events_written_total',
    help: 'Events captured from the WAL that this node (as master) wrote to rppd_event_queue',
    registers: [registry],
  });
  const walTransactions = new Counter({
    name: 'rppd_wal_transactions_written_total',
    help: 'Transactions captured from the WAL that this node (as master) wrote to rppd_event_queue',
    registers: [registry],
  });
  const walWrite = new Histogram({
    name: 'rppd_wal_write_seconds',
    help: 'Round trip of each write of WAL-captured transactions to rppd_event_queue',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  });
  const walLag = (name: string, help: string) =>
    new Histogram({
      name,
      help,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
      registers: [registry],
    });
  const walReceivedLag = walLag(
    'rppd_wal_received_lag_seconds',
    "Per WAL-captured transaction, from its commit (the server's clock) to its arrival at the master",
  );
  const walWrittenLag = walLag(
    'rppd_wal_written_lag_seconds',
    "Per WAL-captured transaction, from its commit (the server's clock) to its events written to rppd_event_queue",
  );
  const walVisibilityWait = new Counter({
    name: 'rppd_wal_visibility_wait_seconds_total',
    help: 'Time written batches waited for transactions committed in the WAL to become visible (a synchronous standby holds that)',
    registers: [registry],
  });
  new Gauge({
    name: 'rppd_wal_slot_lag_bytes',
    help: "WAL written since the schema's slot was last confirmed: what WAL capture has yet to write, kept by the server meanwhile",
    registers: [registry],
    async collect() {
      // A scrape still answers while the database does not: the gauge is left out then.
      const lag = await walSlotLag?.().catch(() => null);
      if (lag === null || lag === undefined) this.reset();
      else this.set(lag);
    },
  });
  gauge('rppd_wal_streaming', '1 while this node (as master) streams the WAL capture slot', () =>
    stats().walStreaming ? 1 : 0,
  );
  gauge('rppd_is_master', '1 while this node holds the master lease', () => (stats().master ? 1 : 0));
  gauge('rppd_events_in_memory', 'Events the master holds in memory', () => stats().admitted);
  gauge(
    'rppd_writers_notify',
    '1 while the master waits for NOTIFY and writers send it (events arrive slowly), 0 while it polls',
    () => (stats().writers_notify ? 1 : 0),
  );
  gauge('rppd_runs_queued', 'Runs waiting for their queue or a free worker', () => stats().queued);
  gauge('rppd_runs_running', 'Runs executing on this node', () => stats().running);
  gauge('rppd_workers', 'Runtime workers alive on this node', () => stats().workers);
  gauge('rppd_max_concurrency', 'rppd_config.max_db_connections of this node', () => stats().maxConcurrency);

  events.on('run:finished', (e) => {
    runs.inc({ fn_id: String(e.fnId), result: e.ok ? 'ok' : (e.kind ?? 'failed') });
    duration.observe({ fn_id: String(e.fnId) }, e.tookMs / 1000);
  });
  events.on('wal:written', (b) => {
    walEvents.inc(b.events);
    walTransactions.inc(b.transactions);
    walWrite.observe(b.writeMs / 1000);
    if (b.visibilityWaitMs > 0) walVisibilityWait.inc(b.visibilityWaitMs / 1000);
    // A clock behind the server's makes a lag negative: counted in the lowest bucket.
    for (const ms of b.receivedLagMs) walReceivedLag.observe(Math.max(0, ms) / 1000);
    for (const ms of b.writtenLagMs) walWrittenLag.observe(Math.max(0, ms) / 1000);
  });
  events.on('run:retry', (e) => retries.inc({ fn_id: String(e.fnId) }));
  events.on('events:completed', (e) => completed.inc(e.ids.length));
  events.on('events:admitted', (e) => admitted.inc({ via: e.via }, e.count));
  events.on('db:error', (e) => dbErrors.inc({ where: e.where }));
  events.on('lease:acquired', () => leaseChanges.inc({ change: 'acquired' }));
  events.on('lease:lost', () => leaseChanges.inc({ change: 'lost' }));
  // The first switch of a term, to NOTIFY, has no reason: 'start'.
  events.on('dispatch:wake-mode', (e) => wakeModeChanges.inc({ mode: e.mode, why: e.why ?? 'start' }));
  return { registry };
}

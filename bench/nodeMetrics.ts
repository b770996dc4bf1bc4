// What an rppd node's /metrics says over a measured window: the difference of two scrapes
// (prom-client text), for W3's rounds: the master process, and its WAL capture.

export interface WalWrites {
  /** Batches written to the queue, and the events in them. */
  writes: number;
  events: number;
  meanMs: number;
  /** Writes whose round trip passed 25 ms and 100 ms (from the histogram's buckets). */
  over25ms: number;
  over100ms: number;
  /** Time batches waited for their transactions to become visible. */
  visibilityWaitMs: number;
  /** Transactions that reached the master more than 25 ms after their commit, and were written more than 25 ms after it. */
  receivedOver25ms: number;
  writtenOver25ms: number;
  /** The same past 5 ms: where a tail of a few milliseconds comes from at low rates. */
  receivedOver5ms: number;
  writtenOver5ms: number;
  transactions: number;
  /** Events the master admitted, by how (rppd_events_admitted_total). */
  admitted: Record<string, number>;
}

function value(text: string, series: string): number {
  const escaped = series.replace(/[{}"+.]/g, (c) => `\\${c}`);
  const m = new RegExp(`^${escaped} ([\\d.e+-]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

export interface MasterProcess {
  /** The process's CPU (all its threads), seconds. */
  cpuSec: number;
  /** The main thread's longest event-loop delay between the two scrapes (the monitor restarts at each scrape). */
  loopDelayMaxMs: number;
  /** Garbage-collection pauses of the main thread: all, major only, and how many took over 25 ms. */
  gcMs: number;
  gcMajorMs: number;
  gcOver25ms: number;
}

type Diff = (series: string) => number;

/** Observations of histogram `name` above bucket `le` over the window; `kind` picks the GC histogram's label. */
function over(d: Diff, name: string, le: string, kind?: string): number {
  const labels = kind === undefined ? '' : `,kind="${kind}"`;
  return d(`${name}_count${kind === undefined ? '' : `{kind="${kind}"}`}`) - d(`${name}_bucket{le="${le}"${labels}}`);
}

/** The master process over the window; null when `after` has no process metrics (a node before them). */
export function masterBetween(before: string, after: string): MasterProcess | null {
  if (!/^process_cpu_seconds_total /m.test(after)) return null;
  const d = (series: string) => value(after, series) - value(before, series);
  const kinds = ['major', 'minor', 'incremental', 'weakcb'];
  const gc = (kind: string, what: string) => d(`nodejs_gc_duration_seconds_${what}{kind="${kind}"}`);
  return {
    cpuSec: d('process_cpu_seconds_total'),
    loopDelayMaxMs: value(after, 'nodejs_eventloop_lag_max_seconds') * 1000,
    gcMs: kinds.reduce((sum, k) => sum + gc(k, 'sum'), 0) * 1000,
    gcMajorMs: gc('major', 'sum') * 1000,
    gcOver25ms: kinds.reduce((n, k) => n + over(d, 'nodejs_gc_duration_seconds', '0.025', k), 0),
  };
}

/** The WAL capture lines of `after` minus those of `before`; null when it wrote nothing meanwhile. */
export function walWritesBetween(before: string, after: string): WalWrites | null {
  const d = (series: string) => value(after, series) - value(before, series);
  const writes = d('rppd_wal_write_seconds_count');
  if (!writes) return null;
  return {
    writes,
    events: d('rppd_wal_events_written_total'),
    meanMs: (d('rppd_wal_write_seconds_sum') / writes) * 1000,
    over25ms: over(d, 'rppd_wal_write_seconds', '0.025'),
    over100ms: over(d, 'rppd_wal_write_seconds', '0.1'),
    visibilityWaitMs: d('rppd_wal_visibility_wait_seconds_total') * 1000,
    transactions: d('rppd_wal_transactions_written_total'),
    admitted: Object.fromEntries(
      ['read', 'handover', 'gap', 'sweep'].map((via) => [via, d(`rppd_events_admitted_total{via="${via}"}`)]),
    ),
    receivedOver25ms: over(d, 'rppd_wal_received_lag_seconds', '0.025'),
    writtenOver25ms: over(d, 'rppd_wal_written_lag_seconds', '0.025'),
    receivedOver5ms: over(d, 'rppd_wal_received_lag_seconds', '0.005'),
    writtenOver5ms: over(d, 'rppd_wal_written_lag_seconds', '0.005'),
  };
}

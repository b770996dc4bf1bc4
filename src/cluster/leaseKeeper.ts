// Keeps this node's heartbeat and, when it can, the master lease. No election:
// whoever first flags itself in rppd_config (UNIQUE master) holds the lease, and
// renews it on the database clock; a lease not renewed in time is taken over.
// See docs/cluster.md (the lease, the epoch, the failover timeline).
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import {
  heartbeat,
  type MasterInfo,
  markStopped,
  releaseLease,
  renewLease,
  tryAcquireLease,
} from '../db/queries/nodes.ts';
import type { NodeEvents } from '../events/nodeEvents.ts';
import { coerceError } from '../util/errors.ts';

export interface LeaseKeeperOptions {
  pool: pg.Pool;
  schema: string;
  nodeId: () => number;
  leaseMs: number;
  heartbeatMs: number;
  events: NodeEvents;
  /** Whether this node may be master now (its row is active). */
  eligible: () => boolean;
  stats: () => Record<string, unknown>;
  onAcquired: (epoch: string) => void;
  onLost: (epoch: string, reason: string) => void;
  /** After every heartbeat: who the database says is master (null: nobody). */
  onHeartbeat?: (master: MasterInfo | null) => void;
}

export interface LeaseKeeper {
  start(): void;
  /** Run one round now (tests, config changes); a round already running is followed by another. */
  tick(): Promise<void>;
  /** rppd_config shows no master now (one released the lease): the next round tries to take it. */
  masterGone(): void;
  epoch(): string | null;
  /**
   * Whether this node may act as master right now: it holds an epoch and its last
   * renewal was sent recently enough that the lease cannot have run out yet, even
   * if the database has not answered since (measured on this node's monotonic clock).
   */
  valid(): boolean;
  /** Shutting down: take no lease from now on, but keep (and renew) one held until stop(). */
  drain(): void;
  /**
   * Release the lease, if held, and stop. With markStopped the same single UPDATE also
   * marks the node stopped (no heartbeat), so the next master does not wait for it.
   */
  stop(options?: { markStopped?: boolean }): Promise<void>;
}

// A lease is trusted locally for this share of its length after the renewal was sent:
// the rest covers clock-rate drift between this machine and the database's.
const TRUST_SHARE = 0.9;
// Try to take over this long after the master's lease runs out by the database's clock.
const TAKEOVER_DELAY_MS = 20;

export function makeLeaseKeeper(o: LeaseKeeperOptions): LeaseKeeper {
  let epoch: string | null = null;
  let renewedAt = 0;
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> | null = null;
  let again = false;
  let stopped = false;
  let draining = false;
  /** When the current master's lease runs out, as seen at the last heartbeat (local monotonic ms). */
  let masterLeaseEnds: number | null = null;

  function lose(reason: string): void {
    if (epoch === null) return;
    const old = epoch;
    epoch = null;
    o.events.emit('lease:lost', { epoch: old, reason });
    o.onLost(old, reason);
  }

  async function round(): Promise<void> {
    const id = o.nodeId();
    try {
      if (epoch !== null) {
        const sentAt = performance.now();
        if (!o.eligible()) {
          const old = epoch;
          lose('node no longer eligible');
          await releaseLease(o.pool, o.schema, id, old);
        } else if (await renewLease(o.pool, o.schema, id, epoch, o.leaseMs, o.stats())) {
          renewedAt = sentAt;
          // The renewal was the heartbeat too.
          masterLeaseEnds = null;
          o.onHeartbeat?.({ id, epoch, leaseLeftMs: o.leaseMs });
          return;
        } else {
          lose('another node holds the lease');
        }
      } else if (o.eligible() && !draining && !masterHoldsLease()) {
        const client = await o.pool.connect();
        const sentAt = performance.now();
        let lease: Awaited<ReturnType<typeof tryAcquireLease>>;
        try {
          lease = await tryAcquireLease(client, o.schema, id, o.leaseMs);
        } finally {
          client.release();
        }
        if (lease && !stopped) {
          epoch = lease.epoch;
          renewedAt = sentAt;
          o.events.emit('lease:acquired', { epoch: lease.epoch });
          o.onAcquired(lease.epoch);
        } else if (lease) {
          await releaseLease(o.pool, o.schema, id, lease.epoch);
        }
      }
      const beat = await heartbeat(o.pool, o.schema, id, o.stats());
      const m = beat.master;
      masterLeaseEnds =
        m && m.id !== id && typeof m.leaseLeftMs === 'number' ? performance.now() + m.leaseLeftMs : null;
      o.onHeartbeat?.(m);
    } catch (err) {
      o.events.emit('db:error', { where: 'lease', error: coerceError(err) });
      // Unable to renew: stop acting as master before others may take over.
      if (epoch !== null && !trusted()) lose('lease could not be renewed');
    }
  }

  // While the last heartbeat showed another node's lease running, trying to take it is three
  // round trips that cannot succeed; schedule() runs the next round just after that lease ends.
  function masterHoldsLease(): boolean {
    return masterLeaseEnds !== null && performance.now() < masterLeaseEnds;
  }

  function trusted(): boolean {
    return performance.now() - renewedAt < o.leaseMs * TRUST_SHARE;
  }

  function tick(): Promise<void> {
    if (ticking) {
      again = true;
      return ticking;
    }
    ticking = (async () => {
      do {
        again = false;
        await round();
      } while (again && !stopped);
    })().finally(() => {
      ticking = null;
    });
    return ticking;
  }

  /** Next round after heartbeatMs, or just after the master's lease runs out if that is sooner. */
  function schedule(): void {
    if (stopped) return;
    let wait = o.heartbeatMs;
    const left = masterLeaseEnds === null ? -1 : masterLeaseEnds - performance.now();
    if (epoch === null && left >= 0 && o.eligible() && !draining) wait = Math.min(wait, left + TAKEOVER_DELAY_MS);
    timer = setTimeout(() => {
      void tick().finally(schedule);
    }, wait);
  }

  return {
    start() {
      void tick().finally(schedule);
    },
    tick,
    masterGone() {
      masterLeaseEnds = null;
    },
    epoch: () => epoch,
    valid: () => epoch !== null && trusted(),
    drain() {
      draining = true;
    },
    async stop(options = {}) {
      stopped = true;
      clearTimeout(timer);
      await ticking;
      const old = epoch;
      epoch = null;
      if (options.markStopped) await markStopped(o.pool, o.schema, o.nodeId()).catch(() => undefined);
      else if (old !== null) await releaseLease(o.pool, o.schema, o.nodeId(), old).catch(() => undefined);
    },
  };
}

// Keeps this node's heartbeat and, when it can, the master lease. No election:
// whoever first flags itself in rppd_config (UNIQUE master) holds the lease, and
// renews it on the database clock; a lease not renewed in time is taken over.
import type pg from 'pg';
import { heartbeat, releaseLease, renewLease, tryAcquireLease } from '../db/queries/nodes.ts';
import type { NodeEvents } from '../events/nodeEvents.ts';
import { coerceError } from '../util/errors.ts';

export interface LeaseKeeperOptions {
  pool: pg.Pool;
  schema: string;
  nodeId: () => number;
  leaseMs: number;
  heartbeatMs: number;
  events: NodeEvents;
  /** Whether this node may be master now (active row, not shutting down). */
  eligible: () => boolean;
  stats: () => Record<string, unknown>;
  onAcquired: (epoch: string) => void;
  onLost: (epoch: string, reason: string) => void;
}

export interface LeaseKeeper {
  start(): void;
  /** Run one round now (tests, config changes). */
  tick(): Promise<void>;
  epoch(): string | null;
  stop(): Promise<void>;
}

export function makeLeaseKeeper(o: LeaseKeeperOptions): LeaseKeeper {
  let epoch: string | null = null;
  let lastRenewed = 0;
  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> | null = null;
  let stopped = false;

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
        if (!o.eligible()) {
          const old = epoch;
          lose('node no longer eligible');
          await releaseLease(o.pool, o.schema, id, old);
        } else if (await renewLease(o.pool, o.schema, id, epoch, o.leaseMs)) {
          lastRenewed = Date.now();
        } else {
          lose('another node holds the lease');
        }
      } else if (o.eligible()) {
        const client = await o.pool.connect();
        let lease: Awaited<ReturnType<typeof tryAcquireLease>>;
        try {
          lease = await tryAcquireLease(client, o.schema, id, o.leaseMs);
        } finally {
          client.release();
        }
        if (lease && !stopped) {
          epoch = lease.epoch;
          lastRenewed = Date.now();
          o.events.emit('lease:acquired', { epoch: lease.epoch });
          o.onAcquired(lease.epoch);
        }
      }
      await heartbeat(o.pool, o.schema, id, o.stats());
    } catch (err) {
      o.events.emit('db:error', { where: 'lease', error: coerceError(err) });
      // Unable to renew: stop acting as master before others may take over.
      if (epoch !== null && Date.now() - lastRenewed > o.leaseMs - o.heartbeatMs) lose('lease could not be renewed');
    }
  }

  function tick(): Promise<void> {
    ticking ??= round().finally(() => {
      ticking = null;
    });
    return ticking;
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(() => {
      void tick().finally(schedule);
    }, o.heartbeatMs);
  }

  return {
    start() {
      void tick().finally(schedule);
    },
    tick,
    epoch: () => epoch,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await ticking;
      if (epoch !== null) {
        const old = epoch;
        epoch = null;
        await releaseLease(o.pool, o.schema, o.nodeId(), old).catch(() => undefined);
      }
    },
  };
}

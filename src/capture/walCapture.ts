// Capture from the WAL, on the master only: streams the schema's logical replication
// slot (pgoutput) and writes each decoded transaction to rppd_event_queue, in commit
// order, with the stream position in the same commit. The slot is the buffer: the
// position is confirmed to it only after that commit, so a crash, a lost connection or a
// new master resumes from the slot and skips what rppd_wal_position says is written.
// A slot has one consumer at a time: the server itself keeps a stale master out.

import pg from 'pg';
import { LogicalReplicationService } from 'pg-logical-replication';
import { AbstractPlugin } from 'pg-logical-replication/dist/output-plugins/abstract.plugin.js';
import type { EventRow } from '../db/queries/events.ts';
import {
  relationRowType,
  type WalEvent,
  type WalTransaction,
  walLsns,
  walSlotState,
  writeWalTransactions,
} from '../db/queries/wal.ts';
import { coerceError } from '../util/errors.ts';
import { formatLsn } from '../util/lsn.ts';
import { makeDurableAcks } from './durableAcks.ts';
import { makePgoutputDecoder, type PgoutputMessage, type WalRelation, type WalValue } from './pgoutputDecoder.ts';

export interface WalCaptureOptions {
  url: string;
  pool: pg.Pool;
  schema: string;
  applicationName: string;
  /**
   * Events were committed to rppd_event_queue. `rows` holds them as the dispatcher reads them
   * when `room` said it would take that many (then it need not read them again), else is empty.
   */
  onWritten: (count: number, rows: EventRow[]) => void;
  /** How many written events the dispatcher would take at once now (0: it reads them itself). */
  room?: () => number;
  /** Each batch written to the queue (metrics). */
  onBatch?: (batch: WalBatchWritten) => void;
  onError: (where: string, error: Error) => void;
  onWarning: (message: string) => void;
  /** How often to look for the slot while there is none (ms). */
  checkMs?: number;
  /** How often unconfirmed writes look at the server's flush position while no new write comes (ms). */
  ackCheckMs?: number;
  /** How often, at most, an unasked keepalive is answered with the server's position while nothing is unwritten (ms). */
  idleAckMs?: number;
  /** Decoded events held in memory before the stream is paused. */
  maxPending?: number;
}

export interface WalBatchWritten {
  events: number;
  transactions: number;
  /** The write statement's round trip (its last try). */
  writeMs: number;
  /** How long the batch waited for its transactions to become visible to other sessions (0: none). */
  visibilityWaitMs: number;
  /**
   * Per transaction written: from its commit (the server's clock) to its arrival here, and to the
   * end of this write (ms). Across hosts these include the clocks' difference.
   */
  receivedLagMs: number[];
  writtenLagMs: number[];
}

/** pgoutput's commit time: microseconds since 2000-01-01 UTC. */
const PG_EPOCH_MS = 946_684_800_000;

export interface WalCapture {
  start(): void;
  stop(): Promise<void>;
  stats(): { streaming: boolean; slot: string | null; written: number; position: string | null };
}

type Decoded = PgoutputMessage | { tag: 'error'; error: Error };

/** pgoutput with text values, decoded by pgoutputDecoder.ts; a bad message becomes a value, never a throw. */
class RawPgoutputPlugin extends AbstractPlugin<{ publication: string }> {
  private readonly decode = makePgoutputDecoder();
  get name(): string {
    return 'pgoutput';
  }
  parse(buffer: Buffer): Decoded {
    try {
      return this.decode(buffer);
    } catch (err) {
      return { tag: 'error', error: coerceError(err) };
    }
  }
  start(client: pg.Client, slotName: string, lastLsn: string): Promise<unknown> {
    const pub = this.options.publication.replace(/'/g, "''");
    return client.query(
      `START_REPLICATION SLOT "${slotName}" LOGICAL ${lastLsn} (proto_version '1', publication_names '${pub}')`,
    );
  }
}

const JSON_TYPES = new Set([114, 3802]);

/** The row as a JSON object of text values (json and jsonb values as they are); unsent TOASTed values left out. */
function rowJson(rel: WalRelation, values: WalValue[]): string {
  const parts: string[] = [];
  rel.columns.forEach((col, i) => {
    const v = values[i];
    if (v === undefined) return;
    const value = v === null ? 'null' : JSON_TYPES.has(col.typeOid) ? v : JSON.stringify(v);
    parts.push(`${JSON.stringify(col.name)}:${value}`);
  });
  return `{${parts.join(',')}}`;
}

export function makeWalCapture(options: WalCaptureOptions): WalCapture {
  const { pool, schema } = options;
  const checkMs = options.checkMs ?? 5000;
  const maxPending = options.maxPending ?? 20_000;
  const ackCheckMs = options.ackCheckMs ?? 250;
  const idleAckMs = options.idleAckMs ?? 1000;
  let running = false;
  let service: LogicalReplicationService | null = null;
  let loop: Promise<void> | null = null;
  let wakeLoop: (() => void) | null = null;
  let slot: string | null = null;
  let written = 0;
  let position: string | null = null;
  const warned = new Set<string>();

  const warnOnce = (key: string, message: string) => {
    if (warned.has(key)) return;
    warned.add(key);
    options.onWarning(message);
  };

  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wakeLoop = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  /** One replication connection, until it ends or fails. */
  async function stream(slotName: string, publication: string): Promise<void> {
    const svc = new LogicalReplicationService(
      { connectionString: options.url, application_name: options.applicationName },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
    );
    service = svc;
    let open: WalTransaction | null = null;
    let pending: WalTransaction[] = [];
    let pendingEvents = 0;
    let flushing: Promise<void> | null = null;
    /** Since when the first batch waits for its transactions to become visible. */
    let waitingSince: number | null = null;
    /** The stream ended: what is not written stays in the slot for the next stream. */
    let closed = false;
    let drained: (() => void) | null = null;
    let failed: Error | null = null;
    let confirmed: string | null = null;
    /** What this stream last wrote: its next write needs no read of the position first. */
    let stored: bigint | undefined;

    // The stream's own connection for its writes: synchronous_commit = off keeps the disk off
    // the event's path; a position is confirmed to the slot once the WAL is flushed past it.
    const writer = new pg.Client({
      connectionString: options.url,
      application_name: options.applicationName,
      options: '-c synchronous_commit=off',
    });
    writer.on('error', (err) => fail(coerceError(err)));
    const acks = makeDurableAcks();
    let idleAckTimer: NodeJS.Timeout | null = null;
    const confirm = (flush: bigint) => {
      const remote = acks.durable(flush);
      if (remote === null) return;
      confirmed = remote;
      // A trailing idle answer would carry an older position than this one.
      if (idleAckTimer) clearTimeout(idleAckTimer);
      idleAckTimer = null;
      void svc.acknowledge(remote);
    };

    const fail = (error: Error) => {
      failed ??= error;
      void svc.stop();
    };
    const flush = (): Promise<void> => {
      flushing ??= (async () => {
        while (pending.length && !failed && !closed) {
          const batch = pending;
          pending = [];
          pendingEvents = 0;
          drained?.();
          drained = null;
          try {
            const count = batch.reduce((n, t) => n + t.events.length, 0);
            const returnRows = count <= (options.room?.() ?? 0);
            const writeStart = performance.now();
            const result = await writeWalTransactions(writer, schema, batch, { known: stored, returnRows });
            const writeMs = performance.now() - writeStart;
            if (result.notVisible) {
              // Committed but not yet visible (a synchronous standby can hold that for long): the
              // batch waits, ahead of what came since.
              pending = batch.concat(pending);
              pendingEvents += count;
              waitingSince ??= Date.now();
              const waited = Date.now() - waitingSince;
              if (waited > 5000) {
                warnOnce(
                  `invisible ${batch[0]!.xid}`,
                  `WAL capture: a transaction (xid ${batch[0]!.xid} or a later one of the batch) is committed in the WAL but not visible to other sessions after ${Math.round(waited / 1000)} s (a synchronous standby not answering?): its events wait`,
                );
              }
              // Usually the next round trip is wait enough (0.2 % of W3's batches at 650/s, once each).
              if (waited > 0) await new Promise((r) => setTimeout(r, Math.min(50, waited / 20)));
              continue;
            }
            const visibilityWaitMs = waitingSince === null ? 0 : Date.now() - waitingSince;
            waitingSince = null;
            stored = result.position;
            position = formatLsn(result.position);
            if (result.wal) {
              if (result.wal.afterCommit) {
                acks.written(position, result.wal.insert);
              } else {
                acks.observedInsert(result.wal.insert);
                acks.written(position);
              }
              confirm(result.wal.flush);
            }
            written += result.written;
            for (const e of result.raw.slice(0, 1)) {
              options.onWarning(
                `WAL capture: ${result.raw.length} event(s) of ${e.schemaTable} did not fit its row type any more (table altered or dropped since the change): stored with text values`,
              );
            }
            if (result.written) {
              const fresh = batch.slice(result.skipped);
              const now = Date.now();
              options.onBatch?.({
                events: result.written,
                transactions: fresh.length,
                writeMs,
                visibilityWaitMs,
                receivedLagMs: fresh.map((t) => (t.receivedAtMs ?? now) - (t.committedAtMs ?? now)),
                writtenLagMs: fresh.map((t) => now - (t.committedAtMs ?? now)),
              });
              options.onWritten(result.written, result.rows);
            }
          } catch (err) {
            fail(coerceError(err));
          }
        }
      })().finally(() => {
        flushing = null;
      });
      return flushing;
    };
    // Writes waiting to be confirmed while no new write comes: look at the flush position.
    const ackTimer = setInterval(() => {
      if (acks.waiting === 0 || flushing || failed) return;
      walLsns(writer).then(
        ({ insert, flush: flushed }) => {
          acks.observedInsert(insert);
          confirm(flushed);
        },
        (err: unknown) => fail(coerceError(err)),
      );
    }, ackCheckMs);

    svc.on('data', (_lsn: string, msg: Decoded) => {
      switch (msg.tag) {
        case 'error':
          fail(msg.error);
          return;
        case 'begin':
          open = { xid: msg.xid, endLsn: 0n, endLsnText: '', events: [] };
          return;
        case 'relation':
          if (msg.relation.replicaIdentity !== 'f') {
            warnOnce(
              `ri ${msg.relation.oid}`,
              `WAL capture: ${msg.relation.schema}.${msg.relation.name} is not REPLICA IDENTITY FULL: its DELETE events carry only the key in old_row, UPDATE events no old_row (SELECT rppd_wal_capture(table) sets it)`,
            );
          }
          return;
        case 'insert':
        case 'update':
        case 'delete': {
          const rel = msg.relation;
          const event: WalEvent = {
            rowType: relationRowType(rel.schema, rel.name),
            schemaTable: `${rel.schema}.${rel.name}`,
            trig: msg.tag === 'insert' ? 1 : msg.tag === 'update' ? 0 : 2,
            newRow: msg.tag === 'delete' ? null : rowJson(rel, msg.new),
            oldRow: msg.tag === 'insert' || msg.old === null ? null : rowJson(rel, msg.old),
          };
          if (msg.tag === 'update' && msg.new.includes(undefined)) {
            warnOnce(
              `toast ${rel.oid}`,
              `WAL capture: an UPDATE of ${event.schemaTable} left unchanged TOASTed columns out of the WAL: they are missing from new_row (REPLICA IDENTITY FULL sends them)`,
            );
          }
          open?.events.push(event);
          return;
        }
        case 'truncate':
          for (const rel of msg.relations) {
            open?.events.push({
              rowType: relationRowType(rel.schema, rel.name),
              schemaTable: `${rel.schema}.${rel.name}`,
              trig: 3,
              newRow: null,
              oldRow: null,
            });
          }
          return;
        case 'commit': {
          const txn = open;
          open = null;
          if (!txn?.events.length) return;
          txn.endLsn = msg.endLsn;
          txn.endLsnText = formatLsn(msg.endLsn);
          txn.committedAtMs = PG_EPOCH_MS + Number(msg.commitTime / 1000n);
          txn.receivedAtMs = Date.now();
          pending.push(txn);
          pendingEvents += txn.events.length;
          void flush();
          // Backpressure: the stream waits (flow control) while too much is decoded and unwritten.
          if (pendingEvents >= maxPending) return new Promise<void>((resolve) => (drained = resolve));
          return;
        }
        default:
          return;
      }
    });
    // The server sends a keepalive each time it waits for WAL while our confirmed position is
    // behind what it sent: about once per commit on the server, whatever the commit touched.
    // Answering each one cost a fifth of the main thread at 4,000 commits/s (finding 31): an
    // answer is owed only when asked for, else at most every idleAckMs so the slot lets WAL go.
    let lastIdleAck = 0;
    const isIdle = () => !open && !pending.length && !flushing && acks.waiting === 0;
    const ackIdle = (lsn: string) => {
      lastIdleAck = Date.now();
      void svc.acknowledge(lsn);
    };
    svc.on('heartbeat', (lsn: string, _ts: number, shouldRespond: boolean) => {
      // Nothing decoded and unwritten: everything up to the server's position is ours, and the
      // slot may let that WAL go. Otherwise answer with what is written, so the server keeps us.
      if (!isIdle()) {
        if (shouldRespond && confirmed) void svc.acknowledge(confirmed);
        return;
      }
      if (shouldRespond || Date.now() - lastIdleAck >= idleAckMs) {
        ackIdle(lsn);
        return;
      }
      // The last keepalive of a burst is answered once the interval is over, if still idle.
      if (idleAckTimer) clearTimeout(idleAckTimer);
      idleAckTimer = setTimeout(
        () => {
          idleAckTimer = null;
          if (isIdle() && !failed) ackIdle(lsn);
        },
        idleAckMs - (Date.now() - lastIdleAck),
      );
    });
    svc.on('error', (err: unknown) => fail(coerceError(err)));

    try {
      await writer.connect();
      await svc.subscribe(new RawPgoutputPlugin({ publication }), slotName);
    } catch (err) {
      failed ??= coerceError(err);
    }
    clearInterval(ackTimer);
    if (idleAckTimer) clearTimeout(idleAckTimer);
    // A write in progress finishes; what is not written yet is not confirmed either: the slot
    // sends it again to the next stream.
    closed = true;
    await flushing;
    await svc.stop().catch(() => undefined);
    await writer.end().catch(() => undefined);
    service = null;
    if (failed && running) throw failed;
  }

  async function run(): Promise<void> {
    let backoff = 1000;
    while (running) {
      try {
        const state = await walSlotState(pool, schema);
        slot = state?.exists ? state.slot : null;
        if (!state?.exists) {
          await pause(checkMs);
          continue;
        }
        if (state.activePid !== null) {
          warnOnce(
            `busy ${state.activePid}`,
            `WAL capture: slot ${state.slot} is streamed by PID ${state.activePid} (a master that has not stopped yet): waiting`,
          );
          await pause(backoff);
          backoff = Math.min(backoff * 2, 15_000);
          continue;
        }
        await stream(state.slot, state.publication);
        backoff = 1000;
      } catch (err) {
        if (!running) break;
        options.onError('wal capture', coerceError(err));
        await pause(backoff);
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  }

  return {
    start() {
      if (running) return;
      running = true;
      loop = run();
    },
    async stop() {
      running = false;
      wakeLoop?.();
      await service?.stop().catch(() => undefined);
      await loop;
      loop = null;
    },
    stats: () => ({ streaming: service !== null, slot, written, position }),
  };
}

// Helpers for cluster tests: several real node processes against one real server.
import * as grpc from '@grpc/grpc-js';
import {
  type RunBatchReply,
  type RunBatchRequest,
  type RunReply,
  rppdNodeClientConstructor,
  SECRET_HEADER,
  type StatusReply,
} from '../../src/rpc/protocol.ts';
import type { Fixture } from '../support/fixture.ts';
import type { LogLine, RppdProcess } from '../support/rppdProcess.ts';
import { waitFor } from '../support/waitFor.ts';

export interface MasterRow {
  id: number;
  host_name: string;
  epoch: string;
}

/** The node holding master = true, if any. */
export async function masterRow(f: Fixture): Promise<MasterRow | undefined> {
  const [row] = await f.query<MasterRow>('SELECT id, host_name, epoch::text AS epoch FROM rppd_config WHERE master');
  return row;
}

/** Wait until some node holds the lease, optionally one with a newer epoch than `after`. */
export async function waitForMasterRow(f: Fixture, after?: string, timeoutMs = 60_000): Promise<MasterRow> {
  return waitFor(
    async () => {
      const row = await masterRow(f);
      return row && (after === undefined || BigInt(row.epoch) > BigInt(after)) ? row : undefined;
    },
    { timeoutMs, what: after === undefined ? 'a master' : `a master with an epoch after ${after}` },
  );
}

/** Wait until these nodes heartbeat with their stats published (their RPC server is up). */
export async function waitForReady(f: Fixture, names: string[], timeoutMs = 90_000): Promise<void> {
  await waitFor(
    async () => {
      const rows = await f.query<{ host_name: string }>(
        `SELECT host_name FROM rppd_config
          WHERE stats ? 'incarnation' AND heartbeat_at > now() - interval '3 seconds' AND host_name = ANY($1)`,
        [names],
      );
      return rows.length === names.length;
    },
    { timeoutMs, what: `nodes ${names.join(', ')} ready` },
  );
}

/** Start nodes at the same time. */
export async function startNodes(
  f: Fixture,
  names: string[],
  env: Record<string, string> = {},
): Promise<Map<string, RppdProcess>> {
  const procs = await Promise.all(names.map((name) => f.startNode({ name, env })));
  return new Map(names.map((name, i) => [name, procs[i]!]));
}

/** Milliseconds since `start`, rounded. */
export function since(start: number): number {
  return Math.round(performance.now() - start);
}

/**
 * Events on `ev` with per-key sequence numbers, run by an ordered function (topic
 * '.k', queue = true) that records where each run started and finished.
 */
export class OrderedWorkload {
  private readonly seq = new Map<number, number>();
  inserted = 0;

  constructor(
    private readonly f: Fixture,
    readonly keys: number,
  ) {}

  static async create(f: Fixture, options: { keys: number; sleepMs: number }): Promise<OrderedWorkload> {
    await f.db.query(`
      CREATE TABLE ev (id serial PRIMARY KEY, k int NOT NULL, seq int NOT NULL);
      CREATE TABLE ev_started (id serial PRIMARY KEY, ev_id int, pid int, at timestamptz DEFAULT clock_timestamp());
      CREATE TABLE ev_done (id serial PRIMARY KEY, ev_id int, k int, seq int, pid int, at timestamptz DEFAULT clock_timestamp());
      CREATE TRIGGER ev_event AFTER INSERT ON ev FOR EACH ROW EXECUTE PROCEDURE rppd_event();
    `);
    await f.db.query(
      `INSERT INTO rppd_function (code, checksum, schema_table, lang, topic, queue) VALUES ($1, 'na', 'ev', 'js', '.k', true)`,
      [
        `export default async (e, ctx) => {
           await ctx.db.query('INSERT INTO ev_started (ev_id, pid) VALUES ($1, $2)', [e.new.id, process.pid]);
           await new Promise((r) => setTimeout(r, ${options.sleepMs}));
           await ctx.db.query('INSERT INTO ev_done (ev_id, k, seq, pid) VALUES ($1, $2, $3, $4)',
             [e.new.id, e.new.k, e.new.seq, process.pid]);
         };`,
      ],
    );
    return new OrderedWorkload(f, options.keys);
  }

  /** n events, keys taken round-robin; returns the ids inserted. */
  async insert(n: number): Promise<number[]> {
    const ks: number[] = [];
    const seqs: number[] = [];
    for (let i = 0; i < n; i++) {
      const k = (this.inserted + i) % this.keys;
      const s = (this.seq.get(k) ?? 0) + 1;
      this.seq.set(k, s);
      ks.push(k);
      seqs.push(s);
    }
    this.inserted += n;
    const rows = await this.f.query<{ id: number }>(
      'INSERT INTO ev (k, seq) SELECT * FROM unnest($1::int[], $2::int[]) RETURNING id',
      [ks, seqs],
    );
    return rows.map((r) => r.id);
  }

  async waitAllDone(timeoutMs = 120_000): Promise<void> {
    await waitFor(
      async () => {
        const [row] = await this.f.query<{ n: string }>('SELECT count(DISTINCT ev_id) AS n FROM ev_done');
        return Number(row?.n) >= this.inserted;
      },
      { timeoutMs, what: `all ${this.inserted} events done` },
    );
  }

  /** Missing events, duplicate runs, and keys whose runs first happened out of sequence. */
  async check(): Promise<{ missing: number; duplicates: number; outOfOrder: number }> {
    const [counts] = await this.f.query<{ missing: string; runs: string; distinct: string }>(`
      SELECT (SELECT count(*) FROM ev WHERE id NOT IN (SELECT ev_id FROM ev_done)) AS missing,
             (SELECT count(*) FROM ev_done) AS runs, (SELECT count(DISTINCT ev_id) FROM ev_done) AS distinct`);
    const rows = await this.f.query<{ k: number; seq: number }>('SELECT k, seq FROM ev_done ORDER BY id');
    const next = new Map<number, number>();
    let outOfOrder = 0;
    for (const { k, seq } of rows) {
      const expected = next.get(k) ?? 1;
      if (seq === expected) next.set(k, seq + 1);
      else if (seq > expected) outOfOrder++;
    }
    return {
      missing: Number(counts?.missing),
      duplicates: Number(counts?.runs) - Number(counts?.distinct),
      outOfOrder,
    };
  }
}

/** Milliseconds from `epochMs` (Date.now() of the test) to a log line's time. */
export function logDelay(line: LogLine, epochMs: number): number {
  return (line.time as number) - epochMs;
}

/**
 * Keep inserting (every 200 ms) until `done` holds: a node the master has not yet
 * added (it asks each node for its Status first) gets work a moment later, not never.
 */
export async function feedUntil(
  insert: () => Promise<unknown>,
  done: () => Promise<boolean>,
  what: string,
  timeoutMs = 90_000,
): Promise<void> {
  await waitFor(
    async () => {
      if (await done()) return true;
      await insert();
      await new Promise((r) => setTimeout(r, 200));
      return false;
    },
    { timeoutMs, intervalMs: 0, what },
  );
}

/** A RunBatch call made directly, as any peer could make it. */
export interface RawBatch {
  /** Replies in the order they arrived, growing while the call runs. */
  replies: RunReply[];
  /** Stream messages received. */
  messages: number;
  /** Set once the node ended the call: null for OK, else its error. */
  ended: grpc.ServiceError | null | undefined;
  done: Promise<grpc.ServiceError | null>;
}

export function rawRunBatch(
  host: string,
  request: Partial<RunBatchRequest>,
  options: { credentials?: grpc.ChannelCredentials; secret?: string } = {},
): RawBatch {
  const Client = rppdNodeClientConstructor();
  const client = new Client(host, options.credentials ?? grpc.credentials.createInsecure()) as unknown as grpc.Client &
    Record<'RunBatch', (r: unknown, m: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<RunBatchReply>>;
  const metadata = new grpc.Metadata();
  if (options.secret !== undefined) metadata.set(SECRET_HEADER, options.secret);
  const batch: RawBatch = { replies: [], messages: 0, ended: undefined, done: Promise.resolve(null) };
  batch.done = new Promise((resolve) => {
    const stream = client.RunBatch(request, metadata, { deadline: Date.now() + 120_000 });
    let error: grpc.ServiceError | null = null;
    stream.on('data', (message: RunBatchReply) => {
      batch.messages++;
      batch.replies.push(...message.results);
    });
    stream.on('error', (err: grpc.ServiceError) => {
      error ??= err;
    });
    stream.on('close', () => {
      client.close();
      batch.ended = error;
      resolve(error);
    });
  });
  return batch;
}

/** A Status call made directly, with the master's epoch and id. */
export function rawStatus(host: string, master: { id: number; epoch: string }): Promise<StatusReply> {
  const Client = rppdNodeClientConstructor();
  const client = new Client(host, grpc.credentials.createInsecure()) as unknown as grpc.Client &
    Record<
      'Status',
      (
        r: unknown,
        m: grpc.Metadata,
        o: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, reply?: StatusReply) => void,
      ) => void
    >;
  return new Promise((resolve, reject) => {
    const request = { epoch: master.epoch, master_id: master.id };
    client.Status(request, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, reply) => {
      client.close();
      if (err) reject(err);
      else resolve(reply!);
    });
  });
}

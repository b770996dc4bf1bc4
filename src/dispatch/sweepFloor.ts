// Where the master's 1 s sweep may start. The sweep looks for events at or below the cursor
// that committed after the reads passed them (a writer that took its id early and committed
// late). Read from the table's first id, it walks every index entry of the events already
// finished and deleted until vacuum removes them: 4.6 → 30 ms per sweep after 400k events of a
// backlog drained (bench/README.md, findings 33 and 34), and more with a larger backlog.
//
// The floor moves up once no writer can still commit an event at or below it. Every writer of
// rppd_event_queue has a transaction id before it takes an event id: the trigger runs after its
// row is written, WAL capture and schedules update their own row first in the same statement.
// With the queue's sequence at CACHE 1 ids are handed out in time order, so every id at or
// below a sweep's cursor C was taken, and its writer's transaction id assigned, before that
// sweep assigned its own transaction id X. A later sweep whose snapshot has xmin > X sees every
// such writer ended: what it does not find at or below C never commits. After that sweep has
// taken in all it found missing, the next ones start above C.
//
// A sequence with a cache (ALTER SEQUENCE … CACHE n) hands out ids out of time order across
// sessions: the floor then stays at 0 and every sweep reads from the start, as before.

export interface SweepFloor {
  /** Sweeps read ids above this one. */
  readonly floor: string;
  /**
   * A sweep read (floor, cursor] with a snapshot of xmin `xmin`, assigned itself transaction id
   * `xid`, and took in every event it found missing (at `now`, epoch ms).
   */
  swept(cursor: string, xid: bigint, xmin: bigint, now?: number): void;
  /**
   * How long the floor's next step has waited for older transactions to end (ms): about one
   * sweep interval while none is open, growing while one holding an xid stays open anywhere on
   * the server (a long transaction, which also keeps vacuum from cleaning up).
   */
  waitingMs(now?: number): number;
}

export function makeSweepFloor(): SweepFloor {
  let floor = '0';
  // The oldest sweep whose writers may not all have ended yet: its cursor, transaction id and time.
  let mark: { cursor: string; xid: bigint; at: number } | null = null;
  return {
    get floor() {
      return floor;
    },
    swept(cursor, xid, xmin, now = Date.now()) {
      if (mark && xmin > mark.xid) {
        if (BigInt(mark.cursor) > BigInt(floor)) floor = mark.cursor;
        mark = null;
      }
      mark ??= { cursor, xid, at: now };
    },
    waitingMs: (now = Date.now()) => (mark ? Math.max(0, now - mark.at) : 0),
  };
}

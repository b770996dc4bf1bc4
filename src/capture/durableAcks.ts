// Which stream position may be confirmed to the slot. The master writes decoded
// transactions with synchronous_commit = off (no wait for the disk on the event's path), so a
// write is safe to confirm only once the server's WAL is flushed past its commit. The end of
// that commit is not returned to the client; any WAL insert position read after the commit
// is at or beyond it, so it stands in for it (as PostgreSQL's own subscriber keeps local and
// remote positions side by side).

export interface DurableAcks {
  /** A write committed, up to the remote (slot) position `remote`; `bound` when read after its commit. */
  written(remote: string, bound?: bigint): void;
  /** A WAL insert position read after every write so far had committed. */
  observedInsert(lsn: bigint): void;
  /** The furthest remote position whose write is flushed at `flush`, or null when none is new. */
  durable(flush: bigint): string | null;
  /** Writes not yet confirmable. */
  readonly waiting: number;
}

export function makeDurableAcks(): DurableAcks {
  const entries: { remote: string; bound: bigint | null }[] = [];
  return {
    written(remote, bound) {
      entries.push({ remote, bound: bound ?? null });
    },
    observedInsert(lsn) {
      for (const e of entries) if (e.bound === null) e.bound = lsn;
    },
    durable(flush) {
      let remote: string | null = null;
      while (entries[0]?.bound != null && entries[0].bound <= flush) remote = entries.shift()!.remote;
      return remote;
    },
    get waiting() {
      return entries.length;
    },
  };
}

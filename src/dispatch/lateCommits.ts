// Events the master's reads passed before they committed. Reads take ids above the cursor; a
// writer that took its id before a faster one's and committed after the read leaves a gap.
// Skipped ids are re-read on every poll for a short while (rolled-back ids never come), and a
// sweep every second reads the ids at or below the cursor from its floor (sweepFloor.ts) for
// anything later still.
import type pg from 'pg';
import { type EventRow, queueSequenceCache, readEventIdsForSweep, readEventsByIds } from '../db/queries/events.ts';
import type { AdmittedVia } from '../events/nodeEvents.ts';
import { makeSweepFloor } from './sweepFloor.ts';

export interface LateCommitsOptions {
  pool: pg.Pool;
  schema: string;
  /** Most events one sweep takes in. */
  windowSize: number;
  /** How often the ids at or below the cursor are swept (ms). */
  sweepMs: number;
  /** Whether the master has the event in memory or is deleting it. */
  known(id: string): boolean;
  admit(rows: EventRow[], via: AdmittedVia): Promise<void>;
}

export interface LateCommits {
  /** A read after id `after` returned `rows`: the ids between them that it did not return. */
  noteSkipped(after: string, rows: EventRow[]): void;
  /** Whether `id` was skipped by a read and is still watched. */
  isWatched(id: string): boolean;
  /** Skipped ids still watched: the loop polls fast while there are any. */
  readonly watching: number;
  /** Re-reads the watched ids; takes in those that committed meanwhile. */
  rereadSkipped(): Promise<void>;
  /** Sweeps (floor, cursor] when sweepMs has passed since the last sweep. */
  sweepIfDue(cursor: string): Promise<void>;
  /** Sweeps so far, the id above which they read, and how long the floor has waited to move (sweepFloor.ts). */
  stats(): { runs: number; floor: string; floorWaitSec: number };
}

const GAP_WATCH_MS = 2000;
const MAX_GAPS = 2000;

export function makeLateCommits(options: LateCommitsOptions): LateCommits {
  const { pool, schema, windowSize, sweepMs, known, admit } = options;
  const gaps = new Map<string, number>();
  const floor = makeSweepFloor();
  // null until read: whether ids come in time order (sweepFloor.ts); false keeps every sweep from id 0.
  let floorUsable: boolean | null = null;
  let lastSweep = 0;
  let sweeps = 0;
  const from = () => (floorUsable ? floor.floor : '0');

  return {
    noteSkipped(after, rows) {
      if (after === '0') return; // a new master starts from the table: nothing was skipped
      const until = Date.now() + GAP_WATCH_MS;
      let prev = BigInt(after);
      for (const row of rows) {
        const id = BigInt(row.id);
        for (let missing = prev + 1n; missing < id && gaps.size < MAX_GAPS; missing++) gaps.set(String(missing), until);
        if (id > prev) prev = id;
      }
    },
    isWatched: (id) => gaps.has(id),
    get watching() {
      return gaps.size;
    },
    async rereadSkipped() {
      const now = Date.now();
      for (const [id, until] of gaps) if (until < now || known(id)) gaps.delete(id);
      if (gaps.size === 0) return;
      const found = await readEventsByIds(pool, schema, [...gaps.keys()]);
      for (const row of found) gaps.delete(row.id);
      if (found.length) await admit(found, 'gap');
    },
    async sweepIfDue(cursor) {
      if (Date.now() - lastSweep < sweepMs) return;
      lastSweep = Date.now();
      if (cursor === '0') return;
      floorUsable ??= (await queueSequenceCache(pool, schema)) <= 1;
      const { ids, xmin, xid } = await readEventIdsForSweep(pool, schema, from(), cursor);
      const missing = ids.filter((id) => !known(id));
      if (missing.length) await admit(await readEventsByIds(pool, schema, missing.slice(0, windowSize)), 'sweep');
      // The floor moves only once every event found missing has been taken in.
      if (missing.length <= windowSize) floor.swept(cursor, xid, xmin);
      sweeps++;
    },
    stats: () => ({
      runs: sweeps,
      floor: from(),
      floorWaitSec: floorUsable ? Math.round(floor.waitingMs() / 100) / 10 : 0,
    }),
  };
}

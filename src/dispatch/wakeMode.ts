// How the master learns of new events: by NOTIFY from the writers, or by polling.
//
// A NOTIFY costs the writer a database-wide lock held through its commit (PostgreSQL
// serialises notifying commits), so at a high write rate it would cap the writers
// (bench W1: 8 clients 0.33 of no trigger). Polling costs the writers nothing but adds
// up to one poll interval to every event's start. So: notify while events arrive slowly
// (a commit every ≥ 1 ms: the lock is free nearly always) and poll every few ms once
// they arrive fast, with a gap between the two rates so the mode does not flap. A backlog
// (a read that came back full, or no room to read) counts as fast: nothing waits anyway.

export type WakeModeName = 'notify' | 'poll';

export interface WakeModeOptions {
  /** Events/s over the last second below which writers NOTIFY again. */
  notifyBelow: number;
  /** Events/s over the last 200–300 ms above which the master polls and writers stop notifying. */
  pollAbove: number;
}

const BUCKET_MS = 100;
const BUCKETS = 10; // one second
const RECENT_BUCKETS = 3; // the current bucket and two before it: 200–300 ms

export const DEFAULT_WAKE_MODE: WakeModeOptions = { notifyBelow: 500, pollAbove: 1000 };

export class WakeMode {
  private readonly counts = new Array<number>(BUCKETS).fill(0);
  private bucket = -1;
  private busyUntil = 0;
  private mode: WakeModeName = 'notify';

  constructor(private readonly options: WakeModeOptions = DEFAULT_WAKE_MODE) {
    if (!(options.notifyBelow > 0 && options.pollAbove >= options.notifyBelow)) {
      throw new Error(
        `wake mode: need 0 < notifyBelow ≤ pollAbove, got ${options.notifyBelow} and ${options.pollAbove}`,
      );
    }
  }

  /** `count` events were read at `now` (ms); `backlog`: the read was full or there was no room to read. */
  note(now: number, count: number, backlog: boolean): void {
    this.advance(now);
    this.counts[this.bucket % BUCKETS]! += count;
    if (backlog) this.busyUntil = now + BUCKET_MS * RECENT_BUCKETS;
  }

  /** The mode for now; changes only when the rate leaves the band between the two thresholds. */
  decide(now: number): WakeModeName {
    this.advance(now);
    if (now < this.busyUntil) {
      this.mode = 'poll';
    } else if (this.mode === 'notify' && this.rate(now, RECENT_BUCKETS) > this.options.pollAbove) {
      this.mode = 'poll';
    } else if (this.mode === 'poll' && this.rate(now, BUCKETS) < this.options.notifyBelow) {
      this.mode = 'notify';
    }
    return this.mode;
  }

  /** Events/s over the current (partial) bucket and the `buckets - 1` before it. */
  private rate(now: number, buckets: number): number {
    let sum = 0;
    for (let i = 0; i < buckets; i++) sum += this.counts[(this.bucket - i) % BUCKETS]!;
    const spanMs = (buckets - 1) * BUCKET_MS + Math.max(1, now - this.bucket * BUCKET_MS);
    return (sum * 1000) / spanMs;
  }

  private advance(now: number): void {
    const current = Math.floor(now / BUCKET_MS);
    if (this.bucket < 0) this.bucket = current;
    // Clear the buckets time has passed over (at most all of them).
    for (let b = this.bucket + 1; b <= current && b <= this.bucket + BUCKETS; b++) this.counts[b % BUCKETS] = 0;
    if (current > this.bucket) this.bucket = current;
  }
}

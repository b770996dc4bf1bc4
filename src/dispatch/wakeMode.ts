// How the master learns of new events: by NOTIFY from the writers, or by polling.
//
// A NOTIFY costs the writer a database-wide lock held through its commit (PostgreSQL
// serialises notifying commits). While writers rarely commit at the same moment that
// costs nothing and every event is read the moment it commits; once they queue for the
// lock it caps them (bench W1, node asleep: 8 clients at 0.35 of no trigger) — and it hides their
// demand, because the capped rate is all the master sees. So in notify mode the master
// samples the writers waiting for that lock (pg_locks), and polls every few ms instead
// once they wait, or once events arrive fast anyway, or pile up. It goes back to NOTIFY
// when the rate falls well below the one at which writers waited.

export type WakeModeName = 'notify' | 'poll';
/** Why the mode last changed: events arrive fast, pile up, writers queue for the lock, or few arrive. */
export type WakeModeReason = 'rate' | 'backlog' | 'contended' | 'slow';

export interface WakeModeOptions {
  /** Events/s over the last second below which writers NOTIFY again (at most; see contention). */
  notifyBelow: number;
  /** Events/s over the last 200–300 ms above which the master polls whatever the lock says. */
  pollAbove: number;
  /** Writers waiting for the NOTIFY lock, averaged over the last second's samples, that make the master poll. */
  waitersAbove: number;
}

const BUCKET_MS = 100;
const BUCKETS = 10; // one second
const RECENT_BUCKETS = 3; // the current bucket and two before it: 200–300 ms
export const SAMPLE_MS = 100;
const SAMPLES = 10;
const MIN_SAMPLES = 3;

export const DEFAULT_WAKE_MODE: WakeModeOptions = { notifyBelow: 500, pollAbove: 1000, waitersAbove: 0.5 };

export class WakeMode {
  private readonly counts = new Array<number>(BUCKETS).fill(0);
  private bucket = -1;
  private busyUntil = 0;
  private mode: WakeModeName = 'notify';
  private lastReason: WakeModeReason | undefined;
  private samples: { at: number; waiters: number }[] = [];
  private lastSample = Number.NEGATIVE_INFINITY;
  /** Events/s when writers last queued for the NOTIFY lock. */
  private contendedRate = Number.POSITIVE_INFINITY;

  constructor(private readonly options: WakeModeOptions = DEFAULT_WAKE_MODE) {
    if (!(options.notifyBelow > 0 && options.pollAbove >= options.notifyBelow && options.waitersAbove > 0)) {
      throw new Error(
        `wake mode: need 0 < notifyBelow ≤ pollAbove and waitersAbove > 0, got ${JSON.stringify(options)}`,
      );
    }
  }

  /** `count` events were read at `now` (ms); `backlog`: the read was full or there was no room to read. */
  note(now: number, count: number, backlog: boolean): void {
    this.advance(now);
    this.counts[this.bucket % BUCKETS]! += count;
    if (backlog) this.busyUntil = now + BUCKET_MS * (RECENT_BUCKETS - 1);
  }

  /** Time to count the writers waiting for the NOTIFY lock: in notify mode, while events arrive. */
  wantsSample(now: number): boolean {
    this.advance(now);
    return this.mode === 'notify' && now - this.lastSample >= SAMPLE_MS && this.rate(now, RECENT_BUCKETS) > 0;
  }

  noteWaiters(now: number, waiters: number): void {
    this.lastSample = now;
    this.samples.push({ at: now, waiters });
    if (this.samples.length > SAMPLES) this.samples.shift();
  }

  /** Why the mode last changed (undefined before the first change). */
  get reason(): WakeModeReason | undefined {
    return this.lastReason;
  }

  /** The mode for now. */
  decide(now: number): WakeModeName {
    this.advance(now);
    if (this.mode === 'notify') {
      // Samples of the last second only: events may have paused in between.
      this.samples = this.samples.filter((s) => now - s.at <= SAMPLES * SAMPLE_MS);
      const contended = this.samples.length >= MIN_SAMPLES && this.averageWaiters() >= this.options.waitersAbove;
      if (contended) this.contendedRate = this.rate(now, BUCKETS);
      const backlog = now < this.busyUntil;
      if (backlog || contended || this.rate(now, RECENT_BUCKETS) > this.options.pollAbove) {
        this.mode = 'poll';
        this.lastReason = contended ? 'contended' : backlog ? 'backlog' : 'rate';
        this.samples = [];
      }
    } else if (now >= this.busyUntil) {
      const below = Math.min(this.options.notifyBelow, this.contendedRate / 2);
      if (this.rate(now, BUCKETS) < below) {
        this.mode = 'notify';
        this.lastReason = 'slow';
        this.contendedRate = Number.POSITIVE_INFINITY;
      }
    }
    return this.mode;
  }

  private averageWaiters(): number {
    return this.samples.reduce((sum, s) => sum + s.waiters, 0) / this.samples.length;
  }

  /** Events/s over the current (partial) bucket and the `buckets - 1` before it. */
  private rate(now: number, buckets: number): number {
    let sum = 0;
    for (let i = 0; i < buckets; i++) sum += this.counts[(((this.bucket - i) % BUCKETS) + BUCKETS) % BUCKETS]!;
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

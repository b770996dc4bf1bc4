// How the master learns of new events: by NOTIFY from the writers, or by polling.
//
// A NOTIFY costs the writer a database-wide lock held through its commit (PostgreSQL
// serialises notifying commits). While writers rarely commit at the same moment that
// costs nothing and every event is read the moment it commits; once they queue for the
// lock it caps them (bench W1, node waiting for NOTIFY: 8 clients at 0.30 of no trigger) — and
// it hides their demand, because the capped rate is all the master sees. So in notify mode the
// master samples that lock (pg_locks), and polls every few ms instead once it is busy half the
// time, or once events arrive fast anyway, or pile up. It goes back to NOTIFY when the rate
// falls well below the one at which the lock was busy, or, at a rate below notifyBelow, tries
// NOTIFY again after a while: the lock may have been busy for a moment only (a cold start, a
// slow disk), and polling adds ~1 ms to every event's start (a poll every 2 ms). A retry that
// finds the lock busy again within 10 s doubles the wait before the next (5 s up to 80 s).
//
// Busy, not the writers waiting: a disk stall of a few ms queues every writer behind the lock
// in one sample (7 in one of 294 samples in bench W3 at 566 rows/s, 290 of them empty), and an
// average of waiters read that as contention (bench/README.md, finding 27).

export type WakeModeName = 'notify' | 'poll';
/** Why the mode last changed: events arrive fast, pile up, the lock is busy, few arrive, or NOTIFY is tried again. */
export type WakeModeReason = 'rate' | 'backlog' | 'contended' | 'slow' | 'retry';

export interface WakeModeOptions {
  /** Events/s over the last second below which writers NOTIFY again (at most; see busyShare). */
  notifyBelow: number;
  /** Events/s over the last 200–300 ms above which the master polls whatever the lock says. */
  pollAbove: number;
  /** Share of the last two seconds' samples that find the NOTIFY lock held or waited for that makes the master poll. */
  busyShare: number;
}

const BUCKET_MS = 100;
const BUCKETS = 10; // one second
const RECENT_BUCKETS = 3; // the current bucket and two before it: 200–300 ms
export const SAMPLE_MS = 100;
// Two seconds of samples, at least a second of them: at a utilisation of 0.11 (566 notifying commits/s here)
// 10 of 20 samples find it busy with a chance of ~1e-5, 5 of 10 with ~2e-3 per window.
const SAMPLES = 20;
const MIN_SAMPLES = 10;
const RETRY_MIN_MS = 5_000;
const RETRY_MAX_MS = 80_000;
/** A retry that keeps NOTIFY this long without the lock busy again starts the back-off over. */
const RETRY_KEPT_MS = 10_000;

export const DEFAULT_WAKE_MODE: WakeModeOptions = { notifyBelow: 700, pollAbove: 1000, busyShare: 0.5 };

export class WakeMode {
  private readonly counts = new Array<number>(BUCKETS).fill(0);
  private bucket = -1;
  private busyUntil = 0;
  private mode: WakeModeName = 'notify';
  private lastReason: WakeModeReason | undefined;
  private samples: { at: number; busy: boolean }[] = [];
  private lastSample = Number.NEGATIVE_INFINITY;
  /** Events/s when the NOTIFY lock was last found busy. */
  private contendedRate = Number.POSITIVE_INFINITY;
  private retryMs = RETRY_MIN_MS;
  private retryAt = Number.POSITIVE_INFINITY;
  private notifySince = 0;
  private pollSince = 0;

  constructor(private readonly options: WakeModeOptions = DEFAULT_WAKE_MODE) {
    const { notifyBelow, pollAbove, busyShare } = options;
    if (!(notifyBelow > 0 && pollAbove >= notifyBelow && busyShare > 0 && busyShare <= 1)) {
      throw new Error(
        `wake mode: need 0 < notifyBelow ≤ pollAbove and 0 < busyShare ≤ 1, got ${JSON.stringify(options)}`,
      );
    }
  }

  /** `count` events were read at `now` (ms); `backlog`: the read was full or there was no room to read. */
  note(now: number, count: number, backlog: boolean): void {
    this.advance(now);
    this.counts[this.bucket % BUCKETS]! += count;
    if (backlog) this.busyUntil = now + BUCKET_MS * (RECENT_BUCKETS - 1);
  }

  /** Time to look at the NOTIFY lock: in notify mode, while events arrive. */
  wantsSample(now: number): boolean {
    this.advance(now);
    return this.mode === 'notify' && now - this.lastSample >= SAMPLE_MS && this.rate(now, RECENT_BUCKETS) > 0;
  }

  /** `busy`: a writer held the NOTIFY lock or waited for it. */
  noteLock(now: number, busy: boolean): void {
    this.lastSample = now;
    this.samples.push({ at: now, busy });
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
      // Recent samples only: events may have paused in between.
      this.samples = this.samples.filter((s) => now - s.at <= SAMPLES * SAMPLE_MS);
      const contended = this.samples.length >= MIN_SAMPLES && this.busyShare() >= this.options.busyShare;
      if (contended) this.contended(now);
      const backlog = now < this.busyUntil;
      if (backlog || contended || this.rate(now, RECENT_BUCKETS) > this.options.pollAbove) {
        this.mode = 'poll';
        this.pollSince = now;
        this.lastReason = contended ? 'contended' : backlog ? 'backlog' : 'rate';
        this.samples = [];
      }
    } else if (now >= this.busyUntil && now - this.pollSince >= BUCKETS * BUCKET_MS) {
      // The last second's rate counts only once that second is all polling: a burst from idle
      // polls on the last 200–300 ms while the second before still reads as slow.
      const rate = this.rate(now, BUCKETS);
      if (rate < this.options.notifyBelow) {
        const reason = rate < this.contendedRate / 2 ? 'slow' : now >= this.retryAt ? 'retry' : undefined;
        if (reason) {
          this.mode = 'notify';
          this.lastReason = reason;
          this.notifySince = now;
          this.contendedRate = Number.POSITIVE_INFINITY;
        }
      }
    }
    return this.mode;
  }

  private contended(now: number): void {
    this.contendedRate = this.rate(now, BUCKETS);
    const retried = this.lastReason === 'retry' && now - this.notifySince < RETRY_KEPT_MS;
    this.retryMs = retried ? Math.min(this.retryMs * 2, RETRY_MAX_MS) : RETRY_MIN_MS;
    this.retryAt = now + this.retryMs;
  }

  private busyShare(): number {
    return this.samples.filter((s) => s.busy).length / this.samples.length;
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

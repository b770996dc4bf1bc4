// In-memory ordering of runs. Pure: no I/O, no timers.
// - the runs of one event go one after another (priority, then id);
// - runs of an ordered queue (fn.queue = true) start only at the head of their queue,
//   so a queue never has two runs at once and keeps event (capture) order;
// - everything else is ready as soon as its event reaches it.
// Every queue is in event order and every event in function order, so waits
// form no cycle.

export interface Job<R> {
  id: string;
  runs: SchedRun<R>[];
  /** index of the run the event is at */
  step: number;
}

export interface SchedRun<R> {
  job: Job<R>;
  index: number;
  queueKey: string;
  ordered: boolean;
  state: 'waiting' | 'ready' | 'running' | 'done';
  payload: R;
}

export class Scheduler<R> {
  private readonly queues = new Map<string, SchedRun<R>[]>();
  private ready: SchedRun<R>[] = [];
  private readyHead = 0;
  private jobs = 0;
  private running = 0;

  constructor(private readonly onJobDone: (job: Job<R>) => void) {}

  get size(): { jobs: number; ready: number; running: number } {
    return { jobs: this.jobs, ready: this.ready.length - this.readyHead, running: this.running };
  }

  add(id: string, runs: { queueKey: string; ordered: boolean; payload: R }[]): Job<R> {
    const job: Job<R> = { id, runs: [], step: 0 };
    job.runs = runs.map((r, index) => ({ job, index, state: 'waiting', ...r }));
    this.jobs++;
    if (job.runs.length === 0) {
      this.jobs--;
      this.onJobDone(job);
      return job;
    }
    for (const run of job.runs) {
      if (!run.ordered) continue;
      const q = this.queues.get(run.queueKey);
      if (q) q.push(run);
      else this.queues.set(run.queueKey, [run]);
    }
    this.consider(job.runs[0]);
    return job;
  }

  /** Up to n runs that may start now, in the order they became ready. */
  take(n: number): SchedRun<R>[] {
    const out: SchedRun<R>[] = [];
    while (out.length < n && this.readyHead < this.ready.length) {
      const run = this.ready[this.readyHead++]!;
      run.state = 'running';
      this.running++;
      out.push(run);
    }
    if (this.readyHead > 1024 && this.readyHead * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.readyHead);
      this.readyHead = 0;
    }
    return out;
  }

  /** Put a running run back at the front (it will be retried), keeping its queue position. */
  putBack(run: SchedRun<R>): void {
    if (run.state !== 'running') return;
    run.state = 'ready';
    this.running--;
    if (this.readyHead > 0) this.ready[--this.readyHead] = run;
    else this.ready.unshift(run);
  }

  finish(run: SchedRun<R>): void {
    if (run.state !== 'running') throw new Error(`finish of a run in state ${run.state}`);
    run.state = 'done';
    this.running--;
    const job = run.job;
    job.step++;
    if (run.ordered) {
      const q = this.queues.get(run.queueKey)!;
      q.shift();
      if (q.length === 0) this.queues.delete(run.queueKey);
      else this.consider(q[0]);
    }
    if (job.step < job.runs.length) this.consider(job.runs[job.step]);
    else {
      this.jobs--;
      this.onJobDone(job);
    }
  }

  private consider(run: SchedRun<R> | undefined): void {
    if (run?.state !== 'waiting') return;
    if (run.job.step !== run.index) return;
    if (run.ordered && this.queues.get(run.queueKey)?.[0] !== run) return;
    run.state = 'ready';
    this.ready.push(run);
  }
}

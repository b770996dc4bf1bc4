// Runs that a new master did not start but that may still be running somewhere:
// those of an earlier epoch that nodes reported at takeover, and those whose call
// broke. While one is held, nothing of its ordered queue (nor the same event and
// function) starts. Pure: the master's dispatch polls the nodes and tells it what is gone.

export interface HeldRun {
  runId: string;
  queueKey: string;
  ordered: boolean;
  eventId: string;
  fnId: number;
}

/** What a held run blocks: its ordered queue, and another run of the same event and function. */
export function heldKeys(run: { queueKey: string; ordered: boolean; eventId: string; fnId: number }): string[] {
  const keys = [`r:${run.eventId}:${run.fnId}`];
  if (run.ordered) keys.push(`q:${run.queueKey}`);
  return keys;
}

export class HeldRuns {
  private readonly byNode = new Map<number, Map<string, HeldRun>>();
  private readonly counts = new Map<string, number>();
  private readonly waiters = new Map<string, (() => void)[]>();

  hold(nodeId: number, runs: readonly HeldRun[]): void {
    let mine = this.byNode.get(nodeId);
    for (const run of runs) {
      if (!mine) {
        mine = new Map();
        this.byNode.set(nodeId, mine);
      }
      if (mine.has(run.runId)) continue;
      mine.set(run.runId, run);
      for (const key of heldKeys(run)) this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    }
  }

  /** The node reported what still runs: the others are gone. */
  retain(nodeId: number, running: ReadonlySet<string>): void {
    const mine = this.byNode.get(nodeId);
    if (!mine) return;
    for (const runId of [...mine.keys()]) if (!running.has(runId)) this.release(nodeId, runId);
  }

  /** The node is gone (or restarted): none of its runs can still be running. */
  releaseNode(nodeId: number): void {
    const mine = this.byNode.get(nodeId);
    if (!mine) return;
    for (const runId of [...mine.keys()]) this.release(nodeId, runId);
  }

  release(nodeId: number, runId: string): void {
    const mine = this.byNode.get(nodeId);
    const run = mine?.get(runId);
    if (!mine || !run) return;
    mine.delete(runId);
    if (mine.size === 0) this.byNode.delete(nodeId);
    for (const key of heldKeys(run)) {
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left > 0) {
        this.counts.set(key, left);
        continue;
      }
      this.counts.delete(key);
      const waiting = this.waiters.get(key);
      this.waiters.delete(key);
      for (const w of waiting ?? []) w();
    }
  }

  isHeld(keys: readonly string[]): boolean {
    return keys.some((k) => this.counts.has(k));
  }

  /** Resolves once none of the keys is held. */
  async whenClear(keys: readonly string[]): Promise<void> {
    for (;;) {
      const key = keys.find((k) => this.counts.has(k));
      if (key === undefined) return;
      await new Promise<void>((resolve) => {
        const list = this.waiters.get(key);
        if (list) list.push(resolve);
        else this.waiters.set(key, [resolve]);
      });
    }
  }

  /** Wake every waiter (the master is stepping down). */
  releaseAll(): void {
    for (const nodeId of [...this.byNode.keys()]) this.releaseNode(nodeId);
  }

  nodes(): number[] {
    return [...this.byNode.keys()];
  }

  has(nodeId: number, runId: string): boolean {
    return this.byNode.get(nodeId)?.has(runId) ?? false;
  }

  countOn(nodeId: number): number {
    return this.byNode.get(nodeId)?.size ?? 0;
  }

  get size(): number {
    let n = 0;
    for (const mine of this.byNode.values()) n += mine.size;
    return n;
  }
}

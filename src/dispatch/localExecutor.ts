// Runs planned runs on this node's runtimes, at most `maxConcurrency` at once
// (rppd_config.max_db_connections: each run holds one worker with one connection).
import type { FunctionDef, Lang, RunResult, Runtime } from '../runtimes/runtime.ts';
import type { RunExecutor } from './dispatcher.ts';
import type { PlannedRun } from './planRuns.ts';

export interface LocalExecutor extends RunExecutor {
  setMaxConcurrency(n: number): void;
  /** Compile and load functions before their first runs (no set-up on the first events' path). */
  prepare(fns: readonly FunctionDef[]): void;
  stats(): { running: number; max: number; workers: number };
}

export interface LocalExecutorOptions {
  nodeId: number;
  maxConcurrency: number;
  runtimes: Runtime[];
  /** Why a language has no runtime on this node (e.g. no Python with psycopg). */
  unavailable?: Partial<Record<Lang, string>>;
}

export function makeLocalExecutor(options: LocalExecutorOptions): LocalExecutor {
  let max = options.maxConcurrency;
  let running = 0;
  const byLang = new Map<Lang, Runtime>();
  for (const rt of options.runtimes) for (const lang of rt.langs) byLang.set(lang, rt);

  return {
    freeSlots: () => max - running,
    setMaxConcurrency(n) {
      max = n;
      for (const rt of options.runtimes) rt.setMaxWorkers(n);
    },
    prepare(fns) {
      for (const rt of options.runtimes) rt.prepare?.(fns.filter((fn) => rt.langs.includes(fn.lang)));
    },
    stats() {
      const workers = options.runtimes.reduce((sum, rt) => sum + rt.stats().workers, 0);
      return { running, max, workers };
    },
    async execute(run: PlannedRun): Promise<RunResult & { nodeId: number }> {
      const runtime = byLang.get(run.fn.lang);
      if (!runtime) {
        const why = options.unavailable?.[run.fn.lang] ?? `no runtime for lang '${run.fn.lang}'`;
        return { ok: false, kind: 'compile', error: why, output: '', tookMs: 0, nodeId: options.nodeId };
      }
      running++;
      try {
        return { ...(await runtime.run(run.fn, run.input)), nodeId: options.nodeId };
      } finally {
        running--;
      }
    },
  };
}

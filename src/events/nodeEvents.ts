// The observability seam: logs, metrics, the dashboard and tests subscribe to
// the same typed events instead of polling or sleeping.
import { EventEmitter } from 'node:events';
import type { WalBatchWritten } from '../capture/walCapture.ts';
import type { WakeModeReason } from '../dispatch/wakeMode.ts';
import type { FailureKind } from '../runtimes/runtime.ts';

export type AdmittedVia = 'read' | 'handover' | 'gap' | 'sweep';

export interface NodeEventMap {
  'node:registered': [{ id: number; name: string; host: string }];
  'node:stopped': [];
  'lease:acquired': [{ epoch: string }];
  'lease:lost': [{ epoch: string; reason: string }];
  'config:reloaded': [{ table: string; functions?: number }];
  /**
   * Events taken into memory, and how: the loop's read after its cursor, handed over by WAL capture
   * as written, a re-read of ids a read skipped, or the sweep (committed after the cursor passed them).
   */
  'events:admitted': [{ count: number; lastId: string; via: AdmittedVia }];
  'run:started': [{ eventId: string; fnId: number; nodeId: number }];
  'run:finished': [
    { eventId: string; fnId: number; ok: boolean; kind?: FailureKind; error?: string; tookMs: number; attempt: number },
  ];
  'run:retry': [{ eventId: string; fnId: number; attempt: number; delayMs: number; error: string }];
  'events:completed': [{ ids: string[] }];
  'db:error': [{ where: string; error: Error }];
  /** Writers NOTIFY (events arrive slowly) or the master polls (they arrive fast): wakeMode.ts. */
  'dispatch:wake-mode': [{ mode: 'notify' | 'poll'; why?: WakeModeReason }];
  /** The master wrote a batch of WAL-captured transactions to rppd_event_queue (capture/walCapture.ts). */
  'wal:written': [WalBatchWritten];
}

export class NodeEvents extends EventEmitter<NodeEventMap> {
  /** Resolves with the first event matching the predicate (tests, tooling). */
  waitFor<K extends keyof NodeEventMap>(
    name: K,
    predicate: (...args: NodeEventMap[K]) => boolean = () => true,
    timeoutMs = 60_000,
  ): Promise<NodeEventMap[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off(name, handler as never);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${String(name)}`));
      }, timeoutMs);
      const handler = (...args: NodeEventMap[K]) => {
        if (!predicate(...args)) return;
        clearTimeout(timer);
        this.off(name, handler as never);
        resolve(args);
      };
      this.on(name, handler as never);
    });
  }
}

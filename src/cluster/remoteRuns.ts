// The master's calls that run functions on other nodes. The runs it hands one node in
// one turn of the event loop travel in one RunBatch call, and each run's result comes
// back as soon as it finishes there (a slow run holds back no other). A run the node
// has other code for (not_found) goes again, with its code, in the node's next call.
// What the master makes of a refused or broken call is up to the caller
// (clusterExecutor.ts): this module only says which of the two it was, per run.
import * as grpc from '@grpc/grpc-js';
import type { PlannedRun } from '../dispatch/planRuns.ts';
import type { RunReply, RunRequest } from '../rpc/protocol.ts';
import { isRefusal, type NodeClient } from '../rpc/rpcClient.ts';
import type { ClusterNode } from './nodeDirectory.ts';

/** How a run sent to a node ended, as far as the master can tell. */
export type RemoteOutcome =
  /** The node reported the run's result. */
  | { kind: 'done'; reply: RunReply }
  /** The node answered the call and said no: it started none of its runs. */
  | { kind: 'refused'; error: unknown }
  /** The call broke before this run's result came: the run may still be running there. */
  | { kind: 'broken'; error: unknown };

export interface RemoteRunsOptions {
  epoch: string;
  masterId: number;
  /** rppd_wake.functions_version loaded here: the node loads at least that. */
  functionsVersion: () => bigint;
  client: (node: ClusterNode) => NodeClient;
}

export interface RemoteRuns {
  run(node: ClusterNode, run: PlannedRun, runId: string): Promise<RemoteOutcome>;
}

interface Pending {
  run: PlannedRun;
  runId: string;
  /** Send the function's code along (the node answered not_found). */
  withCode: boolean;
  settle: (outcome: RemoteOutcome) => void;
}

/** The node ends the call once every run has its result; one that did not get its result is unaccounted for. */
const NO_RESULT = new Error('the node ended the call without the result of this run');

export function makeRemoteRuns(o: RemoteRunsOptions): RemoteRuns {
  const queues = new Map<number, { node: ClusterNode; runs: Pending[] }>();

  function enqueue(node: ClusterNode, pending: Pending): void {
    const queue = queues.get(node.id);
    if (queue) {
      queue.runs.push(pending);
      return;
    }
    queues.set(node.id, { node, runs: [pending] });
    setImmediate(() => send(node.id));
  }

  function request(p: Pending): RunRequest {
    return {
      run_id: p.runId,
      fn_id: p.run.fn.id,
      code_hash: p.run.fn.codeHash,
      queue_key: p.run.queueKey,
      ordered: p.run.ordered,
      input_json: JSON.stringify(p.run.input),
      function_json: p.withCode ? JSON.stringify(p.run.fn) : '',
    };
  }

  function send(nodeId: number): void {
    const queue = queues.get(nodeId);
    queues.delete(nodeId);
    if (!queue) return;
    const { node, runs } = queue;
    const waiting = new Map(runs.map((p) => [p.runId, p]));
    // The node enforces every function's timeout; the deadline only ends a call nobody answers.
    const deadlineMs = Math.max(...runs.map((p) => p.run.fn.timeoutMs)) * 2 + 30_000;
    const onReplies = (replies: RunReply[]) => {
      for (const reply of replies) {
        const p = waiting.get(reply.run_id);
        if (!p) continue;
        waiting.delete(reply.run_id);
        if (!reply.not_found) p.settle({ kind: 'done', reply });
        else if (!p.withCode) enqueue(node, { ...p, withCode: true });
        else p.settle({ kind: 'refused', error: new Error(`function ${p.run.fn.id} not taken with its code`) });
      }
    };
    let call: Promise<void>;
    try {
      const batch = {
        epoch: o.epoch,
        master_id: o.masterId,
        functions_version: o.functionsVersion().toString(),
        runs: runs.map(request),
      };
      call = o.client(node).runBatch(batch, deadlineMs, onReplies);
    } catch (error) {
      // Nothing was sent.
      for (const p of runs) p.settle({ kind: 'refused', error });
      return;
    }
    call.then(
      () => {
        for (const p of waiting.values()) p.settle({ kind: 'broken', error: NO_RESULT });
      },
      (error: unknown) => {
        // A refusal comes before any run of the call started; so does UNIMPLEMENTED (a node
        // without RunBatch). Anything else may have come after some started.
        const refused = isRefusal(error) || (error as { code?: unknown } | null)?.code === grpc.status.UNIMPLEMENTED;
        for (const p of waiting.values()) p.settle({ kind: refused ? 'refused' : 'broken', error });
      },
    );
  }

  return {
    run(node, run, runId) {
      return new Promise((settle) => enqueue(node, { run, runId, withCode: false, settle }));
    },
  };
}

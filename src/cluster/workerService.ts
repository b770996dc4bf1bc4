// The node side of dispatch: runs what the master hands over (by gRPC, or directly
// when this node is the master) on the local runtimes, keeps the list of runs in
// flight that a new master asks for, and refuses every call of an epoch older than
// the newest one it has seen. An epoch it has not seen yet is checked against the
// database first: only the lease makes a master, never what a peer claims.
import { createHash, randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { MasterInfo } from '../db/queries/nodes.ts';
import type { FunctionRegistry } from '../dispatch/functionRegistry.ts';
import type { LocalExecutor } from '../dispatch/localExecutor.ts';
import type { PlannedRun } from '../dispatch/planRuns.ts';
import type {
  InFlightRun,
  RunBatchRequest,
  RunReply,
  RunRequest,
  StatusReply,
  StatusRequest,
} from '../rpc/protocol.ts';
import { type NodeRpcHandlers, RpcRefusal } from '../rpc/rpcServer.ts';
import type { FunctionDef, RunResult } from '../runtimes/runtime.ts';
import { describeError } from '../util/errors.ts';

export interface WorkerServiceOptions {
  nodeId: () => number;
  executor: LocalExecutor;
  registry: FunctionRegistry;
  /** Who holds master = true according to the database. */
  currentMaster: () => Promise<MasterInfo | null>;
  /** A RunBatch call was admitted and its runs started (a debug log line). */
  onBatch?: (batch: { masterId: number; epoch: string; runs: number }) => void;
}

export interface WorkerService {
  /** Random per process: a new value tells the master that runs of an earlier process are gone. */
  readonly incarnation: string;
  readonly handlers: NodeRpcHandlers;
  /** A run this node, as master, gives itself. */
  runLocal(run: PlannedRun, runId: string, epoch: string): Promise<RunResult & { nodeId: number }>;
  /** This node became master with `epoch`: older epochs are refused from now on; the runs in flight. */
  statusLocal(epoch: string): StatusReply;
  /** What a heartbeat or a read of rppd_config saw: the newest master raises the fence. */
  observeMaster(master: { epoch: string | null } | null): void;
  /** Refuse new runs and wait up to graceMs for those in flight. */
  drain(graceMs: number): Promise<void>;
  stats(): { inFlight: number; epoch: string };
}

type Entry = Omit<InFlightRun, 'running_ms'> & { startedAt: number };

export function makeWorkerService(o: WorkerServiceOptions): WorkerService {
  const incarnation = randomUUID();
  const inFlight = new Map<string, Entry>();
  let fence = 0n;
  let stopping = false;
  let verifying: Promise<MasterInfo | null> | null = null;
  let idleWaiters: (() => void)[] = [];

  function raise(epoch: bigint): void {
    if (epoch > fence) fence = epoch;
  }

  function refuseStale(epoch: bigint): void {
    if (epoch < fence) {
      throw new RpcRefusal(grpc.status.FAILED_PRECONDITION, `epoch ${epoch} is stale: epoch ${fence} has taken over`);
    }
  }

  /** Accept calls of `epoch` from `masterId` only if it is the newest master the database knows. */
  async function admitEpoch(text: string, masterId: number): Promise<bigint> {
    const epoch = BigInt(text || '0');
    refuseStale(epoch);
    if (epoch > fence) {
      verifying ??= o.currentMaster().finally(() => {
        verifying = null;
      });
      let master: MasterInfo | null;
      try {
        master = await verifying;
      } catch (err) {
        throw new RpcRefusal(grpc.status.UNAVAILABLE, `cannot check the epoch in the database: ${describeError(err)}`);
      }
      if (master) raise(BigInt(master.epoch));
      if (!master || BigInt(master.epoch) !== epoch || master.id !== masterId) {
        const holder = master ? `node ${master.id} with epoch ${master.epoch}` : 'no node';
        throw new RpcRefusal(
          grpc.status.FAILED_PRECONDITION,
          `node ${masterId} with epoch ${epoch} is not master: the database says ${holder}`,
        );
      }
    }
    return epoch;
  }

  function snapshot(): StatusReply {
    const now = performance.now();
    const x = o.executor.stats();
    return {
      node_id: o.nodeId(),
      incarnation,
      epoch: fence.toString(),
      runs: [...inFlight.values()].map(({ startedAt, ...r }) => ({ ...r, running_ms: now - startedAt })),
      running: x.running,
      max: x.max,
      stopping,
    };
  }

  async function resolveFunction(request: RunRequest, loaded: () => Promise<void>): Promise<FunctionDef> {
    if (request.function_json) {
      const def = JSON.parse(request.function_json) as FunctionDef;
      return { ...def, codeHash: createHash('sha256').update(def.code).digest('hex') };
    }
    await loaded();
    const fn = o.registry.byId(request.fn_id);
    if (!fn || fn.def.codeHash !== request.code_hash) {
      throw new RpcRefusal(grpc.status.NOT_FOUND, `function ${request.fn_id} has other code here: send it`);
    }
    return fn.def;
  }

  async function execute(entry: Entry, run: () => Promise<PlannedRun>) {
    inFlight.set(entry.run_id, entry);
    try {
      const planned = await run();
      try {
        return await o.executor.execute(planned);
      } catch (err) {
        const error = `the runtime failed: ${describeError(err)}`;
        return { ok: false, kind: 'internal' as const, error, output: '', tookMs: 0, nodeId: o.nodeId() };
      }
    } finally {
      inFlight.delete(entry.run_id);
      if (inFlight.size === 0) for (const w of idleWaiters.splice(0)) w();
    }
  }

  /** One run of a batch, registered in flight at once; its reply says how it ended, or that it did not start. */
  async function runOne(request: RunRequest, epoch: string, loaded: () => Promise<void>): Promise<RunReply> {
    const entry: Entry = {
      run_id: request.run_id,
      epoch,
      queue_key: request.queue_key,
      ordered: request.ordered,
      event_id: '',
      fn_id: request.fn_id,
      startedAt: performance.now(),
    };
    const reply = { run_id: request.run_id, not_found: false, node_id: o.nodeId() };
    try {
      const result = await execute(entry, async () => {
        const input = JSON.parse(request.input_json) as PlannedRun['input'];
        entry.event_id = input.eventId;
        const fn = await resolveFunction(request, loaded);
        return { fn, queueKey: request.queue_key, ordered: request.ordered, input };
      });
      return {
        ...reply,
        ok: result.ok,
        kind: result.kind ?? '',
        error: result.error ?? '',
        output: result.output,
        took_ms: result.tookMs,
        node_id: result.nodeId,
      };
    } catch (err) {
      const notFound = err instanceof RpcRefusal && err.code === grpc.status.NOT_FOUND;
      // Whatever failed before the runtime got the run, the run is over here: the master may retry it.
      const error = notFound ? '' : `node ${o.nodeId()} could not start the run: ${describeError(err)}`;
      return {
        ...reply,
        not_found: notFound,
        ok: false,
        kind: notFound ? '' : 'internal',
        error,
        output: '',
        took_ms: 0,
      };
    }
  }

  const handlers: NodeRpcHandlers = {
    async runBatch(request: RunBatchRequest, send: (reply: RunReply) => void): Promise<void> {
      if (stopping) throw new RpcRefusal(grpc.status.UNAVAILABLE, 'this node is stopping');
      const epoch = await admitEpoch(request.epoch, request.master_id);
      // No await between this check and the registration of every run of the call: a
      // Status of a newer epoch either sees them in flight or made this call stale.
      refuseStale(epoch);
      if (stopping) throw new RpcRefusal(grpc.status.UNAVAILABLE, 'this node is stopping');
      // One reload for the call, not one per run.
      let loading: Promise<void> | undefined;
      const loaded = () => {
        loading ??= o.registry.ensureVersion(BigInt(request.functions_version || '0'));
        return loading;
      };
      // From here every run ends with a reply of its own; nothing refuses the call any more.
      const replies = request.runs.map((run) => runOne(run, epoch.toString(), loaded).then(send));
      o.onBatch?.({ masterId: request.master_id, epoch: epoch.toString(), runs: request.runs.length });
      await Promise.all(replies);
    },
    async status(request: StatusRequest): Promise<StatusReply> {
      const epoch = await admitEpoch(request.epoch, request.master_id);
      refuseStale(epoch);
      raise(epoch);
      return snapshot();
    },
  };

  return {
    incarnation,
    handlers,
    runLocal(run, runId, epoch) {
      if (BigInt(epoch) < fence) {
        const error = `not started: epoch ${epoch} is stale (epoch ${fence} has taken over)`;
        return Promise.resolve({ ok: false, kind: 'internal', error, output: '', tookMs: 0, nodeId: o.nodeId() });
      }
      const entry: Entry = {
        run_id: runId,
        epoch,
        queue_key: run.queueKey,
        ordered: run.ordered,
        event_id: run.input.eventId,
        fn_id: run.fn.id,
        startedAt: performance.now(),
      };
      return execute(entry, async () => run);
    },
    statusLocal(epoch) {
      raise(BigInt(epoch));
      return snapshot();
    },
    observeMaster(master) {
      if (master?.epoch) raise(BigInt(master.epoch));
    },
    async drain(graceMs) {
      stopping = true;
      if (inFlight.size === 0) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      idleWaiters = [];
    },
    stats: () => ({ inFlight: inFlight.size, epoch: fence.toString() }),
  };
}

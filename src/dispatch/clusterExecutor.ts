// The master's executor in a cluster: a run stays on this node while at least half of its
// slots are free; otherwise it goes to the node with the most free slots (max_db_connections
// minus runs in flight; this node on ties) among this node and those whose host has CPU to
// spare (spread_cpu_idle), by gRPC or directly when that is this node.
// One instance per master term (epoch).
//
// Ordering across a takeover (docs/cluster.md): before the first run, every node is
// asked for its Status with the new epoch. From then on it refuses the old epoch, and
// the runs it still has of an earlier term are held (HeldRuns): their queues start
// nothing until the node reports them gone, restarts, or stops heartbeating. A run
// whose call broke is held the same way, so its retry never overlaps it. Runs for
// another node travel in batches, one RunBatch call per node and turn (remoteRuns.ts).
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type pg from 'pg';
import { HeldRuns, heldKeys } from '../cluster/heldRuns.ts';
import { makeHostCpuIdle } from '../cluster/hostCpu.ts';
import { type ClusterNode, makeNodeDirectory } from '../cluster/nodeDirectory.ts';
import { makeRemoteRuns } from '../cluster/remoteRuns.ts';
import type { WorkerService } from '../cluster/workerService.ts';
import type { StatusReply } from '../rpc/protocol.ts';
import { isConnectionRefused, refusalCode } from '../rpc/rpcClient.ts';
import type { RpcSecurity } from '../rpc/security.ts';
import type { RunResult } from '../runtimes/runtime.ts';
import { delay } from '../util/backoff.ts';
import { describeError } from '../util/errors.ts';
import type { RunExecutor } from './dispatcher.ts';
import type { PlannedRun } from './planRuns.ts';

export interface ClusterExecutorOptions {
  pool: pg.Pool;
  schema: string;
  selfId: number;
  epoch: string;
  security: RpcSecurity;
  worker: WorkerService;
  /** rppd_wake.functions_version loaded here: the node loads at least that. */
  functionsVersion: () => bigint;
  /** This node may still act as master (LeaseKeeper.valid). */
  leaseValid: () => boolean;
  /** A node said our epoch is stale: check the lease now. */
  onStale: () => void;
  /** More runs may start now (a node joined or came back, held runs ended). */
  onCapacity: () => void;
  /** Every node answered or is gone: dispatch starts. */
  onReady: (info: { nodes: number; held: number; tookMs: number }) => void;
  /** A node without a fresh heartbeat for this long is dead to dispatch. */
  staleMs: number;
  refreshMs: number;
  /** Idle share of its host's CPU a node needs to be given runs this node could keep (0: no check). */
  spreadCpuIdle: number;
  /** This node's machine: nodes on it are judged by this node's own CPU reading, taken every 200 ms. */
  machine: string;
  /**
   * This node takes up to its max_db_connections more runs than it has slots: its JS runtime sends
   * them ahead to its worker threads (run_ahead); they start as slots free, without a dispatch.
   */
  runAhead: boolean;
  onError: (where: string, error: Error) => void;
}

export interface ClusterExecutor extends RunExecutor {
  /** Re-read rppd_config now (it changed). */
  refresh(): void;
  /** Start nothing more: runs not yet started end as 'internal' (the next master runs them). */
  retire(): void;
  /** After the dispatcher stopped: close connections and timers. */
  close(): void;
  stats(): { nodes: Record<string, number>; held: number };
}

const POLL_MS = 200;
const STATUS_DEADLINE_MS = 2_000;
/** One try for nodes whose heartbeat is stale at takeover (a deposed master may still run something). */
const STALE_STATUS_DEADLINE_MS = 500;

type Result = RunResult & { nodeId: number };

export function makeClusterExecutor(o: ClusterExecutorOptions): ClusterExecutor {
  const held = new HeldRuns();
  const dir = makeNodeDirectory({
    pool: o.pool,
    schema: o.schema,
    staleMs: o.staleMs,
    security: o.security,
    onRestarted: (node) => {
      held.releaseNode(node.id);
      o.onCapacity();
    },
  });
  let seq = 0;
  let retired = false;
  let closed = false;
  let gateOpen = false;
  const polling = new Set<number>();
  const remote = makeRemoteRuns({
    epoch: o.epoch,
    masterId: o.selfId,
    functionsVersion: o.functionsVersion,
    client: (node) => {
      // A run sent again with its code after close(): nothing may open a connection any more.
      if (closed) throw new Error('this master term has ended');
      return dir.client(node);
    },
  });

  function fail(nodeId: number, error: string): Result {
    return { ok: false, kind: 'internal', error, output: '', tookMs: 0, nodeId };
  }

  /** What a node reported: hold its runs of earlier terms. */
  function adopt(node: ClusterNode, reply: StatusReply): void {
    if (node.syncedIncarnation !== null && reply.incarnation !== node.syncedIncarnation) held.releaseNode(node.id);
    node.syncedIncarnation = reply.incarnation;
    node.stopping = reply.stopping;
    held.hold(
      node.id,
      reply.runs
        .filter((r) => r.epoch !== o.epoch)
        .map((r) => ({
          runId: r.run_id,
          queueKey: r.queue_key,
          ordered: r.ordered,
          eventId: r.event_id,
          fnId: r.fn_id,
        })),
    );
  }

  async function status(node: ClusterNode, deadlineMs: number): Promise<StatusReply> {
    if (node.id === o.selfId) return o.worker.statusLocal(o.epoch);
    return dir.client(node).status({ epoch: o.epoch, master_id: o.selfId }, deadlineMs);
  }

  /** Ask a node for its Status with our epoch: 'ok' once it answered, 'gone' when nothing listens there. */
  async function sync(node: ClusterNode, deadlineMs = STATUS_DEADLINE_MS): Promise<'ok' | 'gone' | 'failed'> {
    if (node.sync === 'running') return 'failed';
    node.sync = 'running';
    try {
      adopt(node, await status(node, deadlineMs));
      node.sync = 'yes';
      o.onCapacity();
      return 'ok';
    } catch (err) {
      node.sync = 'no';
      dir.markDown(node);
      if (refusalCode(err) === grpc.status.FAILED_PRECONDITION) o.onStale();
      if (!isConnectionRefused(err)) return 'failed';
      held.releaseNode(node.id);
      return 'gone';
    }
  }

  /** Takeover: every node that may run something of an earlier term has answered, or is gone. */
  async function openGate(): Promise<void> {
    const startedAt = performance.now();
    for (let attempt = 0; !retired; attempt++) {
      try {
        await dir.refresh();
        break;
      } catch (err) {
        o.onError('cluster refresh', err as Error);
        await delay(Math.min(2000, 100 * 2 ** attempt));
      }
    }
    const targets = [...dir.all()].filter((n) => n.heartbeat !== null);
    await Promise.all(
      targets.map(async (node) => {
        if (node.id !== o.selfId && !node.alive) {
          await sync(node, STALE_STATUS_DEADLINE_MS);
          return;
        }
        // Alive: wait until it answers, or nothing listens at its address, or its heartbeat stops.
        while (!retired && (await sync(node)) === 'failed') {
          await delay(POLL_MS);
          await dir.refresh().catch(() => undefined);
          if (!node.alive || node.heartbeat === null) return;
        }
      }),
    );
    gateOpen = true;
    const nodes = [...dir.all()].filter((n) => n.sync === 'yes').length;
    if (!retired) o.onReady({ nodes, held: held.size, tookMs: Math.round(performance.now() - startedAt) });
    o.onCapacity();
  }

  /** Held runs on one node: are they still running there? */
  async function poll(node: ClusterNode | undefined, nodeId: number): Promise<void> {
    if (polling.has(nodeId)) return;
    if (nodeId !== o.selfId && !node?.alive) {
      held.releaseNode(nodeId);
      o.onCapacity();
      return;
    }
    polling.add(nodeId);
    try {
      const before = held.countOn(nodeId);
      const reply =
        nodeId === o.selfId || !node ? o.worker.statusLocal(o.epoch) : await status(node, STATUS_DEADLINE_MS);
      const known = node?.syncedIncarnation ?? null;
      if (known !== null && reply.incarnation !== known) held.releaseNode(nodeId);
      else held.retain(nodeId, new Set(reply.runs.map((r) => r.run_id)));
      if (held.countOn(nodeId) < before) o.onCapacity();
    } catch (err) {
      if (isConnectionRefused(err)) {
        held.releaseNode(nodeId);
        o.onCapacity();
      }
    } finally {
      polling.delete(nodeId);
    }
  }

  let lastRefresh = performance.now();
  let wasValid = true;
  const sampleCpu = makeHostCpuIdle();
  let localIdle: number | null = null;
  const timer = setInterval(() => {
    if (closed) return;
    localIdle = sampleCpu() ?? localIdle;
    // Capacity appears without a run finishing: the lease is trusted again, a node's slots grew.
    const valid = o.leaseValid();
    if (valid && !wasValid) o.onCapacity();
    wasValid = valid;
    if (performance.now() - lastRefresh >= o.refreshMs) {
      lastRefresh = performance.now();
      dir.refresh().then(o.onCapacity, (err) => o.onError('cluster refresh', err as Error));
    }
    for (const nodeId of held.nodes()) void poll(dir.get(nodeId), nodeId);
    if (!gateOpen || retired) return;
    for (const node of dir.all()) {
      if (node.sync === 'no' && node.alive && node.ready && node.downAt === undefined) void sync(node);
    }
  }, POLL_MS);
  timer.unref();

  const gate = openGate();

  function eligible(node: ClusterNode, lang?: string): boolean {
    if (!node.active || node.sync !== 'yes' || node.stopping) return false;
    if (lang !== undefined && node.langs !== null && !node.langs.includes(lang as never)) return false;
    if (node.id === o.selfId) return true;
    return node.alive && node.ready && node.downAt === undefined;
  }

  /** Runs beyond its slots this master may give itself (they wait ahead in its JS worker threads). */
  function ahead(node: ClusterNode): number {
    return o.runAhead && node.id === o.selfId ? node.max : 0;
  }

  /** Run slots not taken; free() adds the runs this master may send ahead to its own threads. */
  function slotsFree(node: ClusterNode): number {
    return node.max - node.dispatched - held.countOn(node.id);
  }

  function free(node: ClusterNode): number {
    return slotsFree(node) + ahead(node);
  }

  /**
   * Another node gets runs this node could keep only while its host has CPU to spare: nodes that
   * share this node's host (or one just as busy) would only add the cost of the call (bench W2:
   * three nodes on one 2-core machine, 0.78× of one node with every run past half spread).
   */
  function spareCpu(node: ClusterNode): boolean {
    if (node.id === o.selfId || o.spreadCpuIdle === 0) return true;
    const idle = node.machine === o.machine ? localIdle : node.cpuIdle;
    return idle === null || idle > o.spreadCpuIdle;
  }

  function pick(lang: string): ClusterNode | undefined {
    // A run sent to another node costs a gRPC call and CPU on both ends, even in batches; it
    // pays only once this node is busy, and only on a host with CPU to spare (docs/cluster.md, "Dispatch").
    const self = dir.get(o.selfId);
    const selfRuns = self !== undefined && eligible(self, lang);
    if (selfRuns && slotsFree(self) * 2 > self.max) return self;
    // Free slots first; a run sent ahead here only when no node has one.
    let best: ClusterNode | undefined;
    let bestFree = Number.NEGATIVE_INFINITY;
    for (const node of dir.all()) {
      // A language this node cannot run goes wherever it can.
      if (!eligible(node, lang) || (selfRuns && !spareCpu(node))) continue;
      const f = slotsFree(node);
      if (f > bestFree || (f === bestFree && node.id === o.selfId)) {
        best = node;
        bestFree = f;
      }
    }
    if (bestFree <= 0 && selfRuns && free(self) > 0) return self;
    return best ?? dir.get(o.selfId);
  }

  async function runRemote(node: ClusterNode, run: PlannedRun, runId: string): Promise<Result> {
    const outcome = await remote.run(node, run, runId);
    if (outcome.kind === 'done') {
      const reply = outcome.reply;
      return {
        ok: reply.ok,
        kind: reply.ok ? undefined : ((reply.kind || 'internal') as RunResult['kind']),
        error: reply.error || undefined,
        output: reply.output,
        tookMs: reply.took_ms,
        nodeId: reply.node_id,
      };
    }
    const where = `node ${node.id} (${node.name} at ${node.host})`;
    if (outcome.kind === 'refused') {
      if (refusalCode(outcome.error) === grpc.status.FAILED_PRECONDITION) o.onStale();
      else dir.markDown(node);
      return fail(node.id, `not started on ${where}: ${describeError(outcome.error)}`);
    }
    dir.markDown(node);
    // It may still be running there: its retry waits until the node says it is gone.
    held.hold(node.id, [
      { runId, queueKey: run.queueKey, ordered: run.ordered, eventId: run.input.eventId, fnId: run.fn.id },
    ]);
    return fail(node.id, `${where} failed during the run: ${describeError(outcome.error)}`);
  }

  function start(run: PlannedRun): Promise<Result> {
    if (retired || !o.leaseValid()) {
      return Promise.resolve(fail(o.selfId, `not started: node ${o.selfId} may no longer be master`));
    }
    const node = pick(run.fn.lang);
    if (!node) return Promise.resolve(fail(o.selfId, 'not started: this node is not in rppd_config'));
    const runId = `${o.epoch}-${++seq}`;
    node.dispatched++;
    const running = node.id === o.selfId ? o.worker.runLocal(run, runId, o.epoch) : runRemote(node, run, runId);
    return running.finally(() => {
      node.dispatched--;
    });
  }

  return {
    freeSlots() {
      if (!gateOpen || retired || !o.leaseValid()) return 0;
      let n = 0;
      for (const node of dir.all()) if (eligible(node) && spareCpu(node)) n += Math.max(0, free(node));
      return n;
    },
    async execute(run) {
      const keys = heldKeys({
        queueKey: run.queueKey,
        ordered: run.ordered,
        eventId: run.input.eventId,
        fnId: run.fn.id,
      });
      if (gateOpen && !held.isHeld(keys)) return start(run);
      await gate;
      await held.whenClear(keys);
      return start(run);
    },
    refresh() {
      if (!closed) dir.refresh().catch((err) => o.onError('cluster refresh', err as Error));
    },
    retire() {
      retired = true;
      held.releaseAll();
    },
    close() {
      retired = true;
      closed = true;
      clearInterval(timer);
      held.releaseAll();
      dir.close();
    },
    stats() {
      const nodes: Record<string, number> = {};
      for (const node of dir.all()) if (node.dispatched > 0) nodes[node.id] = node.dispatched;
      return { nodes, held: held.size };
    },
  };
}

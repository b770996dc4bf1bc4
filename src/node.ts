// The composition root: wires settings, database, cluster, dispatch and runtimes
// into one running node. Nothing else reaches across folders.

import { makeWalCapture, type WalCapture } from './capture/walCapture.ts';
import { machineId, makeHostCpuIdle } from './cluster/hostCpu.ts';
import { makeLeaseKeeper } from './cluster/leaseKeeper.ts';
import { registerAgain, registerSelf } from './cluster/registration.ts';
import { makeWorkerService, type WorkerService } from './cluster/workerService.ts';
import type { Settings } from './config/settings.ts';
import { type CronRunner, startCronRunner } from './cron/cronRunner.ts';
import { unquoteIdent } from './db/ident.ts';
import { startListener } from './db/listener.ts';
import { makePool } from './db/pool.ts';
import { deleteOrphanStates } from './db/queries/events.ts';
import { functionsVersion } from './db/queries/functions.ts';
import { cleanupLogs } from './db/queries/logs.ts';
import { announceNodes, currentMaster, loadNodes, type NodeRow } from './db/queries/nodes.ts';
import { walSlotLag } from './db/queries/wal.ts';
import { type ClusterExecutor, makeClusterExecutor } from './dispatch/clusterExecutor.ts';
import { makeCompleter } from './dispatch/completer.ts';
import { type Dispatcher, makeDispatcher } from './dispatch/dispatcher.ts';
import { makeFunctionRegistry } from './dispatch/functionRegistry.ts';
import { makeLocalExecutor } from './dispatch/localExecutor.ts';
import { NodeEvents } from './events/nodeEvents.ts';
import { type HttpApi, startHttpApi } from './http/httpServer.ts';
import { makeMetrics } from './http/metrics.ts';
import { type Logger, logNodeEvents, makeLogger } from './log/logger.ts';
import { lateHandlers, startRpcServer } from './rpc/rpcServer.ts';
import { checkBindSecurity, type RpcSecurity } from './rpc/security.ts';
import { makeRuntimes } from './runtimes/makeRuntimes.ts';
import { coerceError } from './util/errors.ts';
import { VERSION } from './version.ts';

export interface RunningNode {
  id: number;
  events: NodeEvents;
  isMaster(): boolean;
  stop(): Promise<void>;
  /** Resolves when the node has stopped (signal or stop()). */
  stopped: Promise<void>;
}

export interface NodeOptions {
  events?: NodeEvents;
  logger?: Logger;
  /** Install rppd into the schema when it is missing (default true). */
  install?: boolean;
}

export async function startNode(settings: Settings, options: NodeOptions = {}): Promise<RunningNode> {
  const events = options.events ?? new NodeEvents();
  const log = options.logger ?? makeLogger(settings.logLevel);
  logNodeEvents(events, log);
  const { schema } = settings;
  const abort = new AbortController();
  const pool = makePool({
    url: settings.url,
    // One of them is held by the master while it waits for NOTIFY (rppd_listen_lock, dispatcher.ts).
    max: 7,
    applicationName: `rppd ${settings.name}`,
    onError: (error) => events.emit('db:error', { where: 'pool', error }),
  });
  // pg-pool listens for errors of idle clients only: a server restart while a client is checked
  // out (a transaction) would be an unhandled 'error' event and end the process. The query in
  // progress fails with the same error, and its caller handles that.
  pool.on('connect', (client) => client.on('error', () => undefined));
  log.info(
    { version: VERSION, schema, db: settings.urlRedacted, bind: settings.bind.text, name: settings.name },
    'rppd starting',
  );

  // Node-to-node RPC listens before the node registers, so the address in its row answers.
  const security: RpcSecurity = { secret: settings.secret, tls: settings.tls };
  checkBindSecurity(settings.bind, security);
  if (security.secret === undefined) {
    log.warn(
      `node-to-node calls are not authenticated (no secret): only processes on this machine can reach ${settings.bind.text}`,
    );
  }
  let worker: WorkerService | null = null;
  const rpc = await startRpcServer({
    bind: settings.bind,
    security,
    handlers: lateHandlers(() => worker?.handlers ?? null),
    onUnauthenticated: (peer, method) =>
      log.warn({ peer, method }, 'refused a node-to-node call: missing or wrong secret'),
  });

  // Schema and registration.
  let self: NodeRow;
  try {
    self = await registerSelf(pool, settings, log, abort.signal, options.install !== false);
  } catch (err) {
    await rpc.close(0);
    throw err;
  }
  events.emit('node:registered', { id: self.id, name: self.host_name, host: self.host });

  // Runtimes.
  const registry = makeFunctionRegistry(pool, schema);
  await registry.reload();
  const { runtimes, unavailable, langs } = await makeRuntimes(settings, self.max_db_connections, log);
  const executor = makeLocalExecutor({
    nodeId: self.id,
    maxConcurrency: self.max_db_connections,
    runtimes,
    unavailable,
  });

  // The first events should not wait for compiling, loading or primary-key lookups.
  const prepareFunctions = (): void => {
    const all = registry.all();
    executor.prepare(all.map((f) => f.def));
    registry.pkColumns(new Set(all.map((f) => f.def.schemaTable))).catch(() => undefined);
  };
  prepareFunctions();

  const runs = makeWorkerService({
    nodeId: () => self.id,
    executor,
    registry,
    currentMaster: () => currentMaster(pool, schema),
    onBatch: (batch) => log.debug(batch, 'run batch started'),
  });
  worker = runs;

  // Dispatch, while this node holds the lease: one dispatcher, cluster executor and
  // completer per master term, the completer's writes fenced by the term's epoch.
  let dispatcher: Dispatcher | null = null;
  let cluster: ClusterExecutor | null = null;
  let cron: CronRunner | null = null;
  let wal: WalCapture | null = null;
  function startMaster(epoch: string): void {
    const completer = makeCompleter({
      pool,
      schema,
      fence: { nodeId: self.id, epoch },
      onError: (error) => events.emit('db:error', { where: 'complete', error }),
      onFlushed: (ids) => {
        if (ids.length) events.emit('events:completed', { ids });
      },
    });
    let d: Dispatcher | null = null;
    const term = makeClusterExecutor({
      pool,
      schema,
      selfId: self.id,
      epoch,
      security,
      worker: runs,
      functionsVersion: () => registry.version(),
      leaseValid: () => lease.valid() && lease.epoch() === epoch,
      onStale: () => void lease.tick(),
      onCapacity: () => d?.pump(),
      onReady: (info) => log.info({ epoch, ...info }, 'master: dispatching'),
      staleMs: Math.min(settings.leaseMs, 3 * settings.heartbeatMs),
      refreshMs: settings.heartbeatMs,
      spreadCpuIdle: settings.spreadCpuIdle / 100,
      machine,
      runAhead: settings.runAhead > 0,
      onError: (where, error) => events.emit('db:error', { where, error }),
    });
    d = makeDispatcher({
      pool,
      schema,
      registry,
      executor: term,
      completer,
      events,
      pollMs: settings.pollMs,
      maxAttempts: settings.maxAttempts,
    });
    cluster = term;
    dispatcher = d;
    d.start();
    // Tables captured from the WAL (rppd_wal_capture): their events reach the queue through the master.
    wal = makeWalCapture({
      url: settings.url,
      pool,
      schema,
      applicationName: `rppd ${settings.name} wal`,
      room: () => d.room(),
      // Events handed over as written need no read; any others the loop reads.
      onWritten: (count, rows) => d.offer(rows, count),
      onBatch: (batch) => events.emit('wal:written', batch),
      onError: (where, error) => events.emit('db:error', { where, error }),
      onWarning: (message) => log.warn(message),
    });
    wal.start();
    // A NOTIFY sent before LISTEN took effect is lost: read again once it has.
    void listener.listen('rppd_event').then(() => d.wake());
  }
  /** Runs not yet started are dropped, running ones get the grace period; then the term's connections close. */
  async function stopMaster(): Promise<void> {
    const d = dispatcher;
    const c = cluster;
    const w = wal;
    dispatcher = null;
    cluster = null;
    wal = null;
    await w?.stop();
    void listener.unlisten('rppd_event');
    c?.retire();
    try {
      await d?.stop(settings.shutdownGraceMs);
    } finally {
      c?.close();
    }
  }

  const hostCpuIdle = makeHostCpuIdle();
  const machine = machineId();
  const lease = makeLeaseKeeper({
    pool,
    schema,
    nodeId: () => self.id,
    leaseMs: settings.leaseMs,
    heartbeatMs: settings.heartbeatMs,
    events,
    eligible: () => self.active,
    stats: () => {
      const d = dispatcher?.stats();
      const x = executor.stats();
      const c = cluster?.stats();
      return {
        queued: d?.queued ?? 0,
        running: x.running,
        pool: x.max - x.running,
        workers: x.workers,
        max: x.max,
        langs,
        incarnation: runs.incarnation,
        epoch: lease.epoch(),
        cpu_idle: hostCpuIdle(),
        machine,
        ...(c ? { dispatched: c.nodes, held: c.held } : {}),
      };
    },
    onAcquired: (epoch) => {
      startMaster(epoch);
      cron = startCronRunner({ pool, schema, events, onFired: () => dispatcher?.wake() });
    },
    onLost: () => {
      cron?.stop();
      cron = null;
      void stopMaster();
    },
    onHeartbeat: (master) => {
      runs.observeMaster(master);
      if (!announced) {
        // Our stats are in the row now: tell the master it can send us work.
        announced = true;
        announceNodes(pool, schema).catch((error) => events.emit('db:error', { where: 'announce', error }));
      }
    },
  });
  let announced = false;

  // Config changes: re-read the table we are told about; a slow poll covers lost notifications.
  async function reloadConfig(table: string): Promise<void> {
    try {
      if (table === 'rppd_function') {
        const n = await registry.reload();
        prepareFunctions();
        events.emit('config:reloaded', { table, functions: n });
      } else if (table === 'rppd_config') {
        const rows = await loadNodes(pool, schema, settings.leaseMs);
        const mine = rows.find((r) => r.id === self.id);
        if (!mine) {
          log.warn("this node's rppd_config row was deleted; registering again");
          self = await registerAgain(pool, settings);
        } else {
          if (mine.max_db_connections !== self.max_db_connections) executor.setMaxConcurrency(mine.max_db_connections);
          self = mine;
        }
        const master = rows.find((r) => r.master) ?? null;
        runs.observeMaster(master);
        cluster?.refresh();
        events.emit('config:reloaded', { table });
        // No master (one just released the lease): try at once. The master checks its own row.
        if (master === null) lease.masterGone();
        if (master === null || lease.epoch() !== null) void lease.tick();
      } else {
        if (table === 'rppd_cron') cron?.reload();
        events.emit('config:reloaded', { table });
      }
    } catch (err) {
      events.emit('db:error', { where: `reload ${table}`, error: err as Error });
    }
  }

  const listener = startListener({
    url: settings.url,
    // rppd_event only while master (startMaster): every NOTIFY wakes each backend that listens.
    channels: ['rppd_config'],
    onNotify: (channel, payload) => {
      if (channel === 'rppd_event') {
        if (unquoteIdent(payload) === schema) dispatcher?.wake();
        return;
      }
      const dot = payload.lastIndexOf('.');
      if (unquoteIdent(payload.slice(0, dot)) === schema) void reloadConfig(payload.slice(dot + 1));
    },
    onConnected: () => {
      // Anything may have changed while we were disconnected.
      void reloadConfig('rppd_function');
      void reloadConfig('rppd_config');
      dispatcher?.wake();
    },
    onError: (error) => events.emit('db:error', { where: 'listen', error }),
  });

  // Every change of rppd_function raises rppd_wake.functions_version: the slow poll reads that
  // number and reloads only when it moved (a NOTIFY was lost), not every function's code.
  const pollFunctions = async (): Promise<void> => {
    try {
      if ((await functionsVersion(pool, schema)) > registry.version()) await reloadConfig('rppd_function');
    } catch (error) {
      events.emit('db:error', { where: 'reload rppd_function', error: coerceError(error) });
    }
  };
  const maintenance = setInterval(() => {
    cron?.reload();
    void pollFunctions();
    void reloadConfig('rppd_config');
    if (dispatcher) {
      cleanupLogs(pool, schema).catch((error) => events.emit('db:error', { where: 'cleanup', error }));
      deleteOrphanStates(pool, schema).catch((error) => events.emit('db:error', { where: 'cleanup', error }));
    }
  }, 5000);

  lease.start();

  let http: HttpApi | null = null;
  if (settings.http) {
    const info = () => {
      const d = dispatcher?.stats();
      const x = executor.stats();
      return {
        node_id: self.id,
        name: settings.name,
        master: lease.epoch() !== null,
        epoch: lease.epoch(),
        admitted: d?.admitted ?? 0,
        queued: d?.queued ?? 0,
        writers_notify: d?.writersNotify ?? null,
        // The master's sweeps for late commits, the id above which they read, and how long that floor
        // has waited for older transactions to end (dispatch/sweepFloor.ts).
        sweep: d ? { runs: d.sweep.runs, floor: d.sweep.floor, floor_wait_s: d.sweep.floorWaitSec } : null,
        running: x.running,
        workers: x.workers,
        max_concurrency: x.max,
        wal: wal?.stats() ?? null,
      };
    };
    const metrics = makeMetrics(
      events,
      () => {
        const i = info();
        return { ...i, maxConcurrency: i.max_concurrency, walStreaming: i.wal?.streaming ?? false };
      },
      () => walSlotLag(pool, schema),
    );
    http = await startHttpApi({
      host: settings.http.host,
      port: settings.http.port,
      registry: metrics.registry,
      info,
      checkHealth: async () => {
        await pool.query('SELECT 1');
      },
    });
    log.info({ http: `${settings.http.host}:${http.port}` }, 'HTTP API listening (/healthz, /info, /metrics)');
  }

  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => {
    resolveStopped = r;
  });
  let stopPromise: Promise<void> | null = null;
  async function stop(): Promise<void> {
    stopPromise ??= (async () => {
      lease.drain();
      log.info('stopping');
      clearInterval(maintenance);
      cron?.stop();
      cron = null;
      // As master: its runs (on any node) finish and are written while it still holds the lease.
      await stopMaster();
      // As a node: refuse new runs, let those in flight finish.
      await runs.drain(settings.shutdownGraceMs);
      // Releasing the lease notifies every node: one takes over at once.
      await lease.stop({ markStopped: true });
      await rpc.close(1000);
      await http?.close();
      await listener.close();
      await Promise.all(runtimes.map((rt) => rt.close(1000)));
      abort.abort();
      await pool.end().catch(() => undefined);
      events.emit('node:stopped');
      log.info('stopped');
      resolveStopped();
    })();
    return stopPromise;
  }

  return {
    get id() {
      return self.id;
    },
    events,
    isMaster: () => lease.epoch() !== null,
    stop,
    stopped,
  };
}

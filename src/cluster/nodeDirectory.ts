// The master's list of nodes, read from rppd_config (the table is the truth), with
// what only the master knows: runs it has on each node, whether the node answered
// its Status (synced), and whether a call to it failed. A node whose call failed is
// not picked again until its heartbeat moves (it is alive again).
import type pg from 'pg';
import { type ClusterNodeRow, loadClusterNodes } from '../db/queries/nodes.ts';
import { makeNodeClient, type NodeClient } from '../rpc/rpcClient.ts';
import type { RpcSecurity } from '../rpc/security.ts';
import type { Lang } from '../runtimes/runtime.ts';

export interface ClusterNode {
  id: number;
  host: string;
  name: string;
  max: number;
  active: boolean;
  /** Heartbeat fresh (database clock). */
  alive: boolean;
  /** The node published stats: its RPC server is up. */
  ready: boolean;
  /** Epoch ms of heartbeat_at; only compared with itself. */
  heartbeat: string | null;
  incarnation: string | null;
  langs: readonly Lang[] | null;
  /** Heartbeat read after a call to it failed ('pending' until read); undefined when not down. */
  downAt: string | null | undefined;
  sync: 'no' | 'running' | 'yes';
  /** Incarnation that answered our Status. */
  syncedIncarnation: string | null;
  stopping: boolean;
  /** Runs this master has on the node now. */
  dispatched: number;
  /** Idle share of the node's host CPU over its last heartbeat interval; null when not published. */
  cpuIdle: number | null;
  /** The node's machine (hostCpu.ts machineId); null when not published. */
  machine: string | null;
}

export interface NodeDirectoryOptions {
  pool: pg.Pool;
  schema: string;
  staleMs: number;
  security: RpcSecurity;
  /** A node's runs of an earlier process are gone (it restarted). */
  onRestarted: (node: ClusterNode) => void;
}

export interface NodeDirectory {
  refresh(): Promise<void>;
  all(): Iterable<ClusterNode>;
  get(id: number): ClusterNode | undefined;
  client(node: ClusterNode): NodeClient;
  /** A call failed: not picked until it heartbeats again, then asked for its Status again. */
  markDown(node: ClusterNode): void;
  close(): void;
}

const PENDING = 'pending';

function asShare(value: unknown): number | null {
  return typeof value === 'number' && value >= 0 && value <= 1 ? value : null;
}

function asText(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function asLangs(value: unknown): Lang[] | null {
  return Array.isArray(value) ? (value.filter((v) => typeof v === 'string') as Lang[]) : null;
}

export function makeNodeDirectory(o: NodeDirectoryOptions): NodeDirectory {
  const nodes = new Map<number, ClusterNode>();
  const clients = new Map<number, NodeClient>();
  let refreshing: Promise<void> | null = null;

  function apply(row: ClusterNodeRow): void {
    const incarnation = typeof row.stats?.incarnation === 'string' ? row.stats.incarnation : null;
    let node = nodes.get(row.id);
    if (!node) {
      node = {
        id: row.id,
        host: row.host,
        name: row.host_name,
        max: row.max_db_connections,
        active: row.active,
        alive: row.alive,
        ready: incarnation !== null,
        heartbeat: row.heartbeat,
        incarnation,
        langs: asLangs(row.stats?.langs),
        downAt: undefined,
        sync: 'no',
        syncedIncarnation: null,
        stopping: false,
        dispatched: 0,
        cpuIdle: asShare(row.stats?.cpu_idle),
        machine: asText(row.stats?.machine),
      };
      nodes.set(row.id, node);
      return;
    }
    if (node.host !== row.host) {
      clients.get(node.id)?.close();
      clients.delete(node.id);
      node.host = row.host;
      node.sync = node.sync === 'running' ? 'running' : 'no';
    }
    if (node.downAt === PENDING) {
      node.downAt = row.heartbeat;
    } else if (node.downAt !== undefined && row.heartbeat !== null && row.heartbeat !== node.downAt) {
      node.downAt = undefined;
      if (node.sync === 'yes') node.sync = 'no';
    }
    if (incarnation !== null && node.syncedIncarnation !== null && incarnation !== node.syncedIncarnation) {
      // A new process under the same name: whatever the old one ran is gone.
      if (node.sync === 'yes') node.sync = 'no';
      node.syncedIncarnation = null;
      o.onRestarted(node);
    }
    node.name = row.host_name;
    node.max = row.max_db_connections;
    node.active = row.active;
    node.alive = row.alive;
    node.ready = incarnation !== null;
    node.heartbeat = row.heartbeat;
    node.incarnation = incarnation;
    node.langs = asLangs(row.stats?.langs);
    node.cpuIdle = asShare(row.stats?.cpu_idle);
    node.machine = asText(row.stats?.machine);
  }

  return {
    refresh() {
      refreshing ??= (async () => {
        try {
          const rows = await loadClusterNodes(o.pool, o.schema, o.staleMs);
          for (const row of rows) apply(row);
          const ids = new Set(rows.map((r) => r.id));
          for (const id of [...nodes.keys()]) {
            if (ids.has(id)) continue;
            nodes.delete(id);
            clients.get(id)?.close();
            clients.delete(id);
          }
        } finally {
          refreshing = null;
        }
      })();
      return refreshing;
    },
    all: () => nodes.values(),
    get: (id) => nodes.get(id),
    client(node) {
      let client = clients.get(node.id);
      if (!client || client.host !== node.host) {
        client?.close();
        client = makeNodeClient(node.host, o.security);
        clients.set(node.id, client);
      }
      return client;
    },
    markDown(node) {
      if (node.downAt !== undefined) return;
      // The next read of the table gives the heartbeat to compare with: whatever it
      // reads was written before the failure, or the node is alive again.
      node.downAt = PENDING;
      void this.refresh().catch(() => undefined);
    },
    close() {
      for (const client of clients.values()) client.close();
      clients.clear();
    },
  };
}

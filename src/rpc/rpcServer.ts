// The node's gRPC server: every call is checked for the shared secret first;
// handlers answer with a reply (or a stream of them) or throw RpcRefusal (a gRPC
// status for the caller).
import * as grpc from '@grpc/grpc-js';
import type { HostPort } from '../config/settings.ts';
import { describeError } from '../util/errors.ts';
import {
  REFUSED_PREFIX,
  type RunBatchReply,
  type RunBatchRequest,
  type RunReply,
  rppdNodeService,
  SECRET_HEADER,
  type StatusReply,
  type StatusRequest,
} from './protocol.ts';
import { type RpcSecurity, secretMatches, serverCredentials } from './security.ts';

/** A handler's deliberate refusal: the run was not started. */
export class RpcRefusal extends Error {
  override name = 'RpcRefusal';
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export interface NodeRpcHandlers {
  /**
   * Start the runs and `send` each one's reply when it ends; resolves once every run has
   * one. Rejects with RpcRefusal only before any run started.
   */
  runBatch(request: RunBatchRequest, send: (reply: RunReply) => void): Promise<void>;
  status(request: StatusRequest): Promise<StatusReply>;
}

/** Handlers that refuse (UNAVAILABLE) until the node has set up what answers them. */
export function lateHandlers(get: () => NodeRpcHandlers | null): NodeRpcHandlers {
  const starting = () => Promise.reject(new RpcRefusal(grpc.status.UNAVAILABLE, 'this node is starting'));
  return {
    runBatch: (request, send) => get()?.runBatch(request, send) ?? starting(),
    status: (request) => get()?.status(request) ?? starting(),
  };
}

export interface RpcServerOptions {
  bind: HostPort;
  security: RpcSecurity;
  handlers: NodeRpcHandlers;
  /** A call without the right secret was refused (log it). */
  onUnauthenticated: (peer: string, method: string) => void;
}

export interface RpcServer {
  port: number;
  /** Stop accepting calls; calls still running get graceMs, then are cut. */
  close(graceMs: number): Promise<void>;
}

export const SERVER_OPTIONS: grpc.ServerOptions = {
  // Row images and captured output can be large; only authenticated callers get this far.
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': -1,
  // Pings let the server notice a master that vanished without closing its connection.
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
};

const UNAUTHENTICATED: Partial<grpc.StatusObject> = {
  code: grpc.status.UNAUTHENTICATED,
  details: `${REFUSED_PREFIX}missing or wrong secret`,
};

/** A refusal keeps its code and says so; anything else is INTERNAL (the run may have started). */
function errorStatus(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof RpcRefusal) return { code: err.code, details: `${REFUSED_PREFIX}${err.message}` };
  return { code: grpc.status.INTERNAL, details: describeError(err) };
}

export async function startRpcServer(options: RpcServerOptions): Promise<RpcServer> {
  const server = new grpc.Server(SERVER_OPTIONS);

  function authorized(call: { metadata: grpc.Metadata; getPeer(): string }, method: string): boolean {
    if (secretMatches(options.security.secret, call.metadata.get(SECRET_HEADER)[0])) return true;
    options.onUnauthenticated(call.getPeer(), method);
    return false;
  }

  function unary<Req, Res>(method: string, handler: (request: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      if (!authorized(call, method)) {
        callback(UNAUTHENTICATED);
        return;
      }
      handler(call.request).then(
        (reply) => callback(null, reply),
        (err: unknown) => callback(errorStatus(err)),
      );
    };
  }

  function runBatch(): grpc.handleServerStreamingCall<RunBatchRequest, RunBatchReply> {
    return (call) => {
      if (!authorized(call, 'RunBatch')) {
        call.emit('error', UNAUTHENTICATED);
        return;
      }
      // Replies of runs that end in one turn of the event loop travel in one message.
      let outbox: RunReply[] = [];
      const flush = () => {
        if (outbox.length === 0) return;
        const results = outbox;
        outbox = [];
        // A master that cancelled (gone, deadline) gets nothing; its runs still finish here.
        if (!call.cancelled) call.write({ results });
      };
      const send = (reply: RunReply) => {
        if (outbox.push(reply) === 1) setImmediate(flush);
      };
      options.handlers.runBatch(call.request, send).then(
        () => {
          flush();
          if (!call.cancelled) call.end();
        },
        (err: unknown) => {
          flush();
          if (!call.cancelled) call.emit('error', errorStatus(err));
        },
      );
    };
  }

  server.addService(rppdNodeService(), {
    RunBatch: runBatch(),
    Status: unary('Status', options.handlers.status),
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.bind.text, serverCredentials(options.security), (err, boundPort) => {
      if (err) reject(new Error(`cannot listen on ${options.bind.text} for node-to-node calls: ${err.message}`));
      else resolve(boundPort);
    });
  });

  return {
    port,
    async close(graceMs) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}

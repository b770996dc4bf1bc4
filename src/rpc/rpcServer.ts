// The node's gRPC server: every call is checked for the shared secret first;
// handlers answer with a reply or throw RpcRefusal (a gRPC status for the caller).
import * as grpc from '@grpc/grpc-js';
import type { HostPort } from '../config/settings.ts';
import { describeError } from '../util/errors.ts';
import {
  REFUSED_PREFIX,
  type RunReply,
  type RunRequest,
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
  run(request: RunRequest): Promise<RunReply>;
  status(request: StatusRequest): Promise<StatusReply>;
}

/** Handlers that refuse (UNAVAILABLE) until the node has set up what answers them. */
export function lateHandlers(get: () => NodeRpcHandlers | null): NodeRpcHandlers {
  const starting = () => Promise.reject(new RpcRefusal(grpc.status.UNAVAILABLE, 'this node is starting'));
  return {
    run: (request) => get()?.run(request) ?? starting(),
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

export async function startRpcServer(options: RpcServerOptions): Promise<RpcServer> {
  const server = new grpc.Server(SERVER_OPTIONS);

  function unary<Req, Res>(method: string, handler: (request: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      if (!secretMatches(options.security.secret, call.metadata.get(SECRET_HEADER)[0])) {
        options.onUnauthenticated(call.getPeer(), method);
        callback({ code: grpc.status.UNAUTHENTICATED, details: `${REFUSED_PREFIX}missing or wrong secret` });
        return;
      }
      handler(call.request).then(
        (reply) => callback(null, reply),
        (err: unknown) => {
          const refusal = err instanceof RpcRefusal;
          callback({
            code: refusal ? err.code : grpc.status.INTERNAL,
            details: refusal ? `${REFUSED_PREFIX}${err.message}` : describeError(err),
          });
        },
      );
    };
  }

  server.addService(rppdNodeService(), {
    Run: unary('Run', options.handlers.run),
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

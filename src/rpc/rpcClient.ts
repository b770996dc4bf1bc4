// The master's client for one node: promise calls with a deadline, the secret in
// every call, and keepalive pings so that a node that vanished without closing
// its connection (power loss, partition) fails the call within seconds.
import * as grpc from '@grpc/grpc-js';
import {
  REFUSED_PREFIX,
  type RunBatchReply,
  type RunBatchRequest,
  type RunReply,
  rppdNodeClientConstructor,
  SECRET_HEADER,
  type StatusReply,
  type StatusRequest,
} from './protocol.ts';
import { channelCredentials, type RpcSecurity } from './security.ts';

export interface NodeClient {
  readonly host: string;
  /**
   * One RunBatch call: `onReplies` gets the replies as they arrive; resolves when the node
   * ended the call, rejects with the call's error (replies received before it stand).
   */
  runBatch(request: RunBatchRequest, deadlineMs: number, onReplies: (replies: RunReply[]) => void): Promise<void>;
  status(request: StatusRequest, deadlineMs: number): Promise<StatusReply>;
  close(): void;
}

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 2_000,
  'grpc.keepalive_timeout_ms': 2_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': -1,
};

type ServerStream<Req> = (
  request: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
) => grpc.ClientReadableStream<unknown>;

type Unary<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, reply?: Res) => void,
) => grpc.ClientUnaryCall;

export function makeNodeClient(host: string, security: RpcSecurity): NodeClient {
  const Client = rppdNodeClientConstructor();
  const client = new Client(host, channelCredentials(security), CHANNEL_OPTIONS) as unknown as grpc.Client &
    Record<'Status', Unary<unknown, unknown>> &
    Record<'RunBatch', ServerStream<unknown>>;

  function metadata(): grpc.Metadata {
    const m = new grpc.Metadata();
    if (security.secret !== undefined) m.set(SECRET_HEADER, security.secret);
    return m;
  }

  function call<Req, Res>(method: 'Status', request: Req, deadlineMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      client[method](request, metadata(), { deadline: Date.now() + deadlineMs }, (err, reply) => {
        if (err) reject(err);
        else resolve(reply as Res);
      });
    });
  }

  function runBatch(
    request: RunBatchRequest,
    deadlineMs: number,
    onReplies: (replies: RunReply[]) => void,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const stream = client.RunBatch(request, metadata(), { deadline: Date.now() + deadlineMs });
      let failure: unknown;
      stream.on('data', (message: RunBatchReply) => onReplies(message.results));
      // A status other than OK comes as 'error' while replies received before it may still
      // be buffered: settle once they are all delivered ('end'), or the stream is gone.
      stream.on('error', (err) => {
        failure ??= err;
      });
      const settle = () => (failure === undefined ? resolve() : reject(failure));
      stream.on('end', settle);
      stream.on('close', settle);
    });
  }

  return {
    host,
    runBatch,
    status: (request, deadlineMs) => call<StatusRequest, StatusReply>('Status', request, deadlineMs),
    close: () => client.close(),
  };
}

function grpcError(err: unknown): grpc.ServiceError | undefined {
  return err && typeof err === 'object' && 'code' in err && typeof err.code === 'number'
    ? (err as grpc.ServiceError)
    : undefined;
}

/** The node answered and said no: the run was not started there. */
export function isRefusal(err: unknown): boolean {
  return grpcError(err)?.details?.startsWith(REFUSED_PREFIX) ?? false;
}

export function refusalCode(err: unknown): grpc.status | undefined {
  return isRefusal(err) ? grpcError(err)?.code : undefined;
}

/**
 * Nothing listens at the node's address: its process is gone, and so are its runs.
 * (A node that is alive but cut off gives a timeout, never this.)
 */
export function isConnectionRefused(err: unknown): boolean {
  const e = grpcError(err);
  return e?.code === grpc.status.UNAVAILABLE && /ECONNREFUSED/.test(e.details ?? '');
}

// The node-to-node protocol (rppd.proto) loaded once, with TypeScript shapes of
// its messages. Keep the interfaces in step with rppd.proto.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export interface RunBatchRequest {
  epoch: string;
  master_id: number;
  functions_version: string;
  runs: RunRequest[];
}

export interface RunRequest {
  run_id: string;
  fn_id: number;
  code_hash: string;
  queue_key: string;
  ordered: boolean;
  input_json: string;
  function_json: string;
}

export interface RunBatchReply {
  results: RunReply[];
}

export interface RunReply {
  run_id: string;
  not_found: boolean;
  ok: boolean;
  kind: string;
  error: string;
  output: string;
  took_ms: number;
  node_id: number;
}

export interface StatusRequest {
  epoch: string;
  master_id: number;
}

export interface InFlightRun {
  run_id: string;
  epoch: string;
  queue_key: string;
  ordered: boolean;
  event_id: string;
  fn_id: number;
  running_ms: number;
}

export interface StatusReply {
  node_id: number;
  incarnation: string;
  epoch: string;
  runs: InFlightRun[];
  running: number;
  max: number;
  stopping: boolean;
}

/** Refusal details start with this, so a caller can tell "not started" from a broken transport. */
export const REFUSED_PREFIX = 'rppd refused: ';

/** Metadata entry that carries the shared secret. */
export const SECRET_HEADER = 'x-rppd-secret';

export const PROTO_PATH = fileURLToPath(new URL('./rppd.proto', import.meta.url));

let service: grpc.ServiceDefinition | undefined;

/** The RppdNode service definition (server side and client constructor). */
export function rppdNodeService(): grpc.ServiceDefinition {
  if (!service) {
    const definition = protoLoader.loadSync(PROTO_PATH, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      arrays: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      rppd: { v1: { RppdNode: grpc.ServiceClientConstructor } };
    };
    service = pkg.rppd.v1.RppdNode.service;
  }
  return service;
}

/** A raw client constructor for the service (tests use it to call a node directly). */
export function rppdNodeClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(rppdNodeService(), 'RppdNode');
}

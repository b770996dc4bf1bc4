// Who may call a node: the shared secret (compared in constant time) and the
// optional TLS credentials of both ends. Policy (docs/cluster.md, "Security"):
// a node that other machines can reach refuses to start without a secret.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { HostPort } from '../config/settings.ts';
import { UsageError } from '../util/errors.ts';

export interface RpcSecurity {
  /** Shared by every node (settings.secret, RPPD_SECRET). */
  secret?: string;
  /** PEM file paths (settings.tls). */
  tls?: { cert: string; key: string; ca?: string };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Whether a call's secret is the expected one; hashing first makes the comparison length-independent. */
export function secretMatches(expected: string | undefined, given: unknown): boolean {
  if (expected === undefined) return true;
  if (typeof given !== 'string') return false;
  return timingSafeEqual(digest(expected), digest(given));
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIPv4(host) && host.startsWith('127.');
}

/** A bind other machines can reach needs a secret; on loopback only this machine's processes can call. */
export function checkBindSecurity(bind: HostPort, security: RpcSecurity): void {
  if (security.secret !== undefined || isLoopback(bind.host)) return;
  throw new UsageError(
    `bind ${bind.text} is reachable from other machines but no secret is set: set secret (RPPD_SECRET or ` +
      'RPPD_SECRET_FILE) to the same value on every node, or bind a loopback address',
  );
}

export function serverCredentials(security: RpcSecurity): grpc.ServerCredentials {
  const tls = security.tls;
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const ca = tls.ca ? readFileSync(tls.ca) : null;
  // With a CA the server also asks for, and checks, the caller's certificate (mutual TLS).
  return grpc.ServerCredentials.createSsl(
    ca,
    [{ private_key: readFileSync(tls.key), cert_chain: readFileSync(tls.cert) }],
    ca !== null,
  );
}

export function channelCredentials(security: RpcSecurity): grpc.ChannelCredentials {
  const tls = security.tls;
  if (!tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    tls.ca ? readFileSync(tls.ca) : null,
    readFileSync(tls.key),
    readFileSync(tls.cert),
  );
}

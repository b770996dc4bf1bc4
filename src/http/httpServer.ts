// The node's small HTTP API: /healthz, /info (JSON) and /metrics (Prometheus).
// One error shape: { error: { code, message } }.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { describeError } from '../util/errors.ts';

export interface HttpApi {
  close(): Promise<void>;
  port: number;
}

export interface HttpApiOptions {
  host: string;
  port: number;
  registry: Registry;
  /** Throws when the node cannot reach its database. */
  checkHealth: () => Promise<void>;
  info: () => Record<string, unknown>;
}

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = type === 'application/json' ? JSON.stringify(body) : String(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(text);
}

function fail(res: ServerResponse, status: number, code: string, message: string): void {
  send(res, status, { error: { code, message } });
}

export async function startHttpApi(o: HttpApiOptions): Promise<HttpApi> {
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(res, 405, 'method_not_allowed', 'use GET');
    switch (path) {
      case '/healthz':
        try {
          await Promise.race([
            o.checkHealth(),
            new Promise((_, reject) => setTimeout(() => reject(new Error('database check timed out')), 3000).unref()),
          ]);
          return send(res, 200, { status: 'ok', ...o.info() });
        } catch (err) {
          return fail(res, 503, 'unhealthy', describeError(err));
        }
      case '/info':
        return send(res, 200, o.info());
      case '/metrics':
        return send(res, 200, await o.registry.metrics(), o.registry.contentType);
      default:
        return fail(res, 404, 'not_found', `no route ${path}`);
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => fail(res, 500, 'internal', describeError(err)));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : o.port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

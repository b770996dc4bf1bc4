// A dedicated LISTEN connection that reconnects with backoff. After every
// (re)connect it reports `reconnected`, so callers re-read the tables: a
// notification is a hint, the tables are the truth.
import pg from 'pg';
import { backoffMs, delay } from '../util/backoff.ts';
import { coerceError } from '../util/errors.ts';

export interface Listener {
  close(): Promise<void>;
}

export interface ListenerOptions {
  url: string;
  channels: string[];
  onNotify: (channel: string, payload: string) => void;
  onConnected: () => void;
  onError: (err: Error) => void;
}

export function startListener(options: ListenerOptions): Listener {
  const abort = new AbortController();
  let client: pg.Client | undefined;

  async function connectOnce(): Promise<void> {
    const c = new pg.Client({ connectionString: options.url, application_name: 'rppd listen', keepAlive: true });
    const ended = new Promise<void>((resolve) => {
      c.on('error', (err) => {
        options.onError(err);
        resolve();
      });
      c.on('end', () => resolve());
    });
    c.on('notification', (msg) => options.onNotify(msg.channel, msg.payload ?? ''));
    await c.connect();
    client = c;
    for (const channel of options.channels) await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    options.onConnected();
    await ended;
    client = undefined;
    await c.end().catch(() => undefined);
  }

  void (async () => {
    let attempt = 0;
    while (!abort.signal.aborted) {
      const startedAt = Date.now();
      try {
        await connectOnce();
      } catch (err) {
        if (!abort.signal.aborted) options.onError(coerceError(err));
      }
      if (abort.signal.aborted) break;
      attempt = Date.now() - startedAt > 30_000 ? 0 : attempt + 1;
      await delay(backoffMs(attempt), abort.signal);
    }
  })();

  return {
    async close() {
      abort.abort();
      await client?.end().catch(() => undefined);
    },
  };
}

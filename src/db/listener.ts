// A dedicated LISTEN connection that reconnects with backoff. After every
// (re)connect it reports `reconnected`, so callers re-read the tables: a
// notification is a hint, the tables are the truth.
import pg from 'pg';
import { backoffMs, delay } from '../util/backoff.ts';
import { coerceError } from '../util/errors.ts';

export interface Listener {
  /** Listen on one more channel from now on (and after every reconnect); resolves once listening or not connected. */
  listen(channel: string): Promise<void>;
  /** Stop listening on a channel. */
  unlisten(channel: string): Promise<void>;
  close(): Promise<void>;
}

export interface ListenerOptions {
  url: string;
  /** Channels to listen on from the first connection (more with listen()). */
  channels: string[];
  onNotify: (channel: string, payload: string) => void;
  onConnected: () => void;
  onError: (err: Error) => void;
}

export function startListener(options: ListenerOptions): Listener {
  const abort = new AbortController();
  let client: pg.Client | undefined;
  const channels = new Set(options.channels);

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
    for (const channel of channels) await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
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

  // A failure here ends the connection ('error' above); the reconnect listens on the set again.
  async function send(command: 'LISTEN' | 'UNLISTEN', channel: string): Promise<void> {
    await client?.query(`${command} ${pg.escapeIdentifier(channel)}`).catch(() => undefined);
  }

  return {
    async listen(channel) {
      channels.add(channel);
      await send('LISTEN', channel);
    },
    async unlisten(channel) {
      channels.delete(channel);
      await send('UNLISTEN', channel);
    },
    async close() {
      abort.abort();
      await client?.end().catch(() => undefined);
    },
  };
}

// pg-boss: its schema and a queue with notify = true created by the library; jobs created by
// a trigger through pg-boss's documented SQL path (INSERT INTO pgboss.job (name, data)), plus
// the NOTIFY that send() issues for a notify queue; worked in batches of `concurrency`.
import { sql } from '../db.ts';
import { installPeer, startPeer } from './peerProcess.ts';
import type { BenchSystem } from './system.ts';

/** pg-boss's LISTEN channel for schema pgboss (plans.js notifyChannelSql). */
const CHANNEL = `'pgboss_' || left(encode(sha224('pgboss'::bytea), 'hex'), 24)`;

export const pgBoss: BenchSystem = {
  name: 'pg-boss',
  queueTables: ['pgboss.job_common'],
  supportsOrdered: false,
  async install(url, options = {}) {
    if (options.ordered) throw new Error('pg-boss: no per-key ordering in this benchmark');
    await installPeer('pg-boss', url);
    await sql(
      url,
      `CREATE FUNCTION bench_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO pgboss.job (name, data) VALUES ('task', jsonb_build_object('id', NEW.id));
         PERFORM pg_notify(${CHANNEL}, 'task');
         RETURN NULL;
       END $$;
       CREATE TRIGGER bench_enqueue AFTER INSERT ON src FOR EACH ROW EXECUTE FUNCTION bench_enqueue();`,
    );
  },
  start: (url, options) => startPeer('pg-boss', url, options.concurrency, options.env),
};

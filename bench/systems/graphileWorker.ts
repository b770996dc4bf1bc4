// graphile-worker: its schema by runMigrations, jobs added by a trigger through its SQL API
// graphile_worker.add_job (with queue_name per key when ordered), worked by one process with
// `concurrency` concurrent jobs and its documented batching settings (peers/worker.mjs).
import { sql } from '../db.ts';
import { installPeer, startPeer } from './peerProcess.ts';
import type { BenchSystem } from './system.ts';

export const graphileWorker: BenchSystem = {
  name: 'graphile-worker',
  queueTables: ['graphile_worker._private_jobs', 'graphile_worker._private_job_queues'],
  supportsOrdered: true,
  async install(url, options = {}) {
    await installPeer('graphile-worker', url);
    const queue = options.ordered ? `, queue_name := 'k' || NEW.k` : '';
    await sql(
      url,
      `CREATE FUNCTION bench_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         PERFORM graphile_worker.add_job('task', json_build_object('id', NEW.id)${queue});
         RETURN NULL;
       END $$;
       CREATE TRIGGER bench_enqueue AFTER INSERT ON src FOR EACH ROW EXECUTE FUNCTION bench_enqueue();`,
    );
  },
  start: (url, options) => startPeer('graphile-worker', url, options.concurrency, options.env),
};

// Preloaded into an rppd node by the P workload (`node --import bench/profileHook.mjs bin/rppd.js …`).
// CPU-profiles the main thread and every worker thread (the JS runtime's workers are started with
// execArgv [], so --cpu-prof does not reach them) through the inspector's NodeWorker domain,
// for RPPD_BENCH_PROFILE_MS after RPPD_BENCH_PROFILE_DELAY_MS, into RPPD_BENCH_PROFILE_DIR.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.RPPD_BENCH_PROFILE_DIR;
const delayMs = Number(process.env.RPPD_BENCH_PROFILE_DELAY_MS ?? 3000);
const durationMs = Number(process.env.RPPD_BENCH_PROFILE_MS ?? 15000);

if (dir) {
  const session = new Session();
  session.connect();
  const post = (method, params = {}) =>
    new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
  const workers = new Map(); // sessionId -> pending replies
  let nextId = 1;
  const toWorker = (sessionId, method, params = {}) =>
    new Promise((resolve) => {
      const id = nextId++;
      workers.get(sessionId).set(id, resolve);
      void post('NodeWorker.sendMessageToWorker', { sessionId, message: JSON.stringify({ id, method, params }) });
    });
  let profiling = false;
  session.on('NodeWorker.attachedToWorker', ({ params }) => {
    workers.set(params.sessionId, new Map());
    if (profiling) void startWorker(params.sessionId);
  });
  session.on('NodeWorker.receivedMessageFromWorker', ({ params }) => {
    const msg = JSON.parse(params.message);
    const pending = workers.get(params.sessionId);
    if (msg.id !== undefined && pending?.has(msg.id)) {
      pending.get(msg.id)(msg.result);
      pending.delete(msg.id);
    }
  });
  const startWorker = async (sessionId) => {
    await toWorker(sessionId, 'Profiler.enable');
    await toWorker(sessionId, 'Profiler.start');
  };
  await post('NodeWorker.enable', { waitForDebuggerOnStart: false });
  await post('Profiler.enable');
  setTimeout(async () => {
    profiling = true;
    await post('Profiler.start');
    await Promise.all([...workers.keys()].map(startWorker));
    setTimeout(async () => {
      const main = await post('Profiler.stop');
      writeFileSync(join(dir, 'main.cpuprofile'), JSON.stringify(main.profile));
      let n = 0;
      for (const sessionId of workers.keys()) {
        const res = await Promise.race([
          toWorker(sessionId, 'Profiler.stop'),
          new Promise((r) => setTimeout(() => r(undefined), 5000)),
        ]);
        if (res?.profile) writeFileSync(join(dir, `worker-${++n}.cpuprofile`), JSON.stringify(res.profile));
      }
      writeFileSync(join(dir, 'done'), String(n));
    }, durationMs).unref();
  }, delayMs).unref();
}

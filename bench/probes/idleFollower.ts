// CPU of an idle master and an idle follower, each thread, and the follower's hottest functions
// (bench/README.md, finding 22: what three nodes on one machine cost beyond one).
//   node --import tsx bench/probes/idleFollower.ts [seconds]   (PROFILE=0: no --cpu-prof, whose own
//   thread costs the follower ~50 ms of CPU per second)
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPg } from '../../tests/support/pgServer.ts';
import { profileMarkdown, summarizeProfile } from '../cpuProfile.ts';
import { BENCH_TABLES, sql } from '../db.ts';
import { cpuSeconds, sleep, threadCpu } from '../measure.ts';
import { rppd, startRppdNode } from '../systems/rppd.ts';

const seconds = Number(process.argv[2] ?? 30);
const profile = process.env.PROFILE !== '0';
const pg = await startPg({ durable: true });
try {
  const url = await pg.createDatabase('idle_follower');
  await sql(url, BENCH_TABLES);
  await rppd.install(url);
  const master = await startRppdNode(url, 'master');
  const profDir = profile ? mkdtempSync(join(tmpdir(), 'rppd-idle-prof-')) : undefined;
  const follower = await startRppdNode(url, 'follower', {
    waitFor: 'registered',
    nodeArgs: profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [],
  });
  // Past start-up and the first full GC of a fresh process (~8 s).
  await sleep(15_000);
  const pids = { master: master.proc.pid!, follower: follower.proc.pid! };
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, [cpuSeconds(pid), threadCpu(pid)]]));
  await sleep(seconds * 1000);
  for (const [name, pid] of Object.entries(pids)) {
    const [cpu0, threads0] = before[name] as [number, ReturnType<typeof threadCpu>];
    console.log(`${name}: ${(((cpuSeconds(pid) - cpu0) * 1000) / seconds).toFixed(1)} ms of CPU per second`);
    const byName = new Map<string, number>();
    for (const [tid, t] of threadCpu(pid)) {
      const used = t.cpu - (threads0.get(tid)?.cpu ?? 0);
      byName.set(t.name, (byName.get(t.name) ?? 0) + used);
    }
    for (const [thread, cpu] of [...byName].sort((a, b) => b[1] - a[1])) {
      if (cpu > 0) console.log(`  ${thread}: ${((cpu * 1000) / seconds).toFixed(1)} ms/s`);
    }
  }
  await follower.stop();
  await master.stop();
  if (profDir) {
    const files = readdirSync(profDir).map((f) => join(profDir, f));
    console.log(profileMarkdown(summarizeProfile(files, 30), 'follower, whole run').join('\n'));
  }
} finally {
  await pg.stop();
}

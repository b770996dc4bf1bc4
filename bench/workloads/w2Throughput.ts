// W2 end-to-end throughput: `rows` rows inserted (single-row autocommit, pgbench with
// insertClients connections) while the system runs; per row the JS handler reads the source
// row and inserts a sink row. events/s from the first insert to the last sink row.
import type { BenchContext } from '../context.ts';
import { median } from '../measure.ts';
import { describe, exact, type ThroughputResult, throughputRun } from './throughputRun.ts';

export async function runW2(ctx: BenchContext): Promise<void> {
  const rates: Record<string, number> = {};
  const caseName = `${ctx.options.sizes.rows} rows, JS handler`;
  for (const system of ctx.systems) {
    const r = await throughputRun(ctx, system, { label: 'w2' });
    rates[system.name] = r.rate;
    ctx.data[`W2 ${system.name}`] = r;
    ctx.record({
      workload: 'W2',
      case: caseName,
      system: system.name,
      metric: 'events/s',
      value: r.rate,
      unit: 'ev/s',
      otherCores: r.otherCores,
      note: `${exact(r) ? 'exact' : 'NOT EXACT'}: ${describe(r)}`,
    });
  }
  if (ctx.systems.some((s) => s.name === 'rppd')) {
    const rppdSystem = ctx.systems.find((s) => s.name === 'rppd')!;
    const r = await throughputRun(ctx, rppdSystem, { label: 'w2_wal', install: { capture: 'wal' } });
    ctx.data['W2 rppd WAL capture'] = r;
    ctx.record({
      workload: 'W2',
      case: caseName,
      system: 'rppd (WAL capture)',
      metric: 'events/s',
      value: r.rate,
      unit: 'ev/s',
      ratio: rates.rppd === undefined ? undefined : r.rate / rates.rppd,
      ratioTo: 'rppd with the trigger',
      otherCores: r.otherCores,
      note: `${exact(r) ? 'exact' : 'NOT EXACT'}: ${describe(r)}`,
    });
  }
  const rppd = rates.rppd;
  const graphile = rates['graphile-worker'];
  const boss = rates['pg-boss'];
  if (rppd === undefined) return;
  if (graphile !== undefined) {
    ctx.record({
      workload: 'W2',
      case: caseName,
      system: 'rppd',
      metric: 'ratio to graphile-worker',
      value: rppd / graphile,
      unit: '×',
      target: { text: '≥ 2', pass: rppd / graphile >= 2 },
    });
  }
  if (boss !== undefined) {
    ctx.record({
      workload: 'W2',
      case: caseName,
      system: 'rppd',
      metric: 'ratio to pg-boss',
      value: rppd / boss,
      unit: '×',
      target: { text: '> 1', pass: rppd / boss > 1 },
    });
  }
  if (ctx.options.multiNode) await runMultiNode(ctx, caseName);
}

/**
 * 3 nodes vs 1 on this machine. One pair of runs differs by up to ±10 % from run to run
 * (0.91, 1.01 and 1.11 in three pairs back to back), so the line runs `rounds` (5) pairs,
 * alternating which goes first. The figure is the median of the pairs' ratios: the two runs of
 * a pair are next to each other in time, so a slow spell of the machine falls on both (the
 * ratio of the two medians, which ignores the pairing, is in the note).
 */
async function runMultiNode(ctx: BenchContext, caseName: string): Promise<void> {
  const rppdSystem = ctx.systems.find((s) => s.name === 'rppd');
  if (!rppdSystem) return;
  const rounds = ctx.options.quick ? 1 : 5;
  const one: ThroughputResult[] = [];
  const three: ThroughputResult[] = [];
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? [1, 3] : [3, 1];
    for (const nodes of order) {
      ctx.log(`W2 multi-node round ${round}/${rounds}: ${nodes} node(s)`);
      const r = await throughputRun(ctx, rppdSystem, { label: `w2_${nodes}nodes_r${round}`, nodes });
      (nodes === 1 ? one : three).push(r);
    }
  }
  ctx.data['W2 rppd 1 node rounds'] = one;
  ctx.data['W2 rppd 3 nodes rounds'] = three;
  const oneRate = median(one.map((r) => r.rate));
  const threeRate = median(three.map((r) => r.rate));
  const pairRatios = three.map((r, i) => r.rate / one[i]!.rate);
  const ratio = median(pairRatios);
  const rates = (rs: ThroughputResult[]) => rs.map((r) => Math.round(r.rate)).join(' / ');
  const allExact = [...one, ...three].every(exact);
  ctx.record({
    workload: 'W2',
    case: caseName,
    system: 'rppd (3 nodes)',
    metric: 'events/s, median of rounds',
    value: threeRate,
    unit: 'ev/s',
    ratio,
    ratioTo: 'rppd 1 node: median of the paired rounds',
    target: { text: '≥ 1', pass: ratio >= 1 },
    otherCores: median(three.map((r) => r.otherCores)),
    note:
      `${allExact ? 'exact' : 'NOT EXACT'} in every round; rounds 3 nodes ${rates(three)}, 1 node ${rates(one)} ev/s ` +
      `(ratio per round ${pairRatios.map((x) => x.toFixed(2)).join(' / ')}; ratio of the medians ` +
      `${(threeRate / oneRate).toFixed(2)}); last 3-node run: ${describe(three.at(-1)!)}`,
  });
}

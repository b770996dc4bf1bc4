// W2 end-to-end throughput: `rows` rows inserted (single-row autocommit, pgbench with
// insertClients connections) while the system runs; per row the JS handler reads the source
// row and inserts a sink row. events/s from the first insert to the last sink row.
import type { BenchContext } from '../context.ts';
import { describe, exact, throughputRun } from './throughputRun.ts';

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
  if (ctx.options.multiNode) {
    const rppdSystem = ctx.systems.find((s) => s.name === 'rppd')!;
    const r = await throughputRun(ctx, rppdSystem, { label: 'w2_3nodes', nodes: 3 });
    ctx.data['W2 rppd 3 nodes'] = r;
    ctx.record({
      workload: 'W2',
      case: caseName,
      system: 'rppd (3 nodes)',
      metric: 'events/s',
      value: r.rate,
      unit: 'ev/s',
      ratio: r.rate / rppd,
      ratioTo: 'rppd 1 node',
      otherCores: r.otherCores,
      note: `${exact(r) ? 'exact' : 'NOT EXACT'}: ${describe(r)}`,
    });
  }
}

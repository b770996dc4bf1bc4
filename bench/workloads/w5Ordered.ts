// W5 ordered: W2 where src.k (1,000 values) is the ordering key — rppd topic '.k' with
// queue = true (runs of one key never overlap and follow commit order) vs queue = false;
// graphile-worker with queue_name 'k'||k vs no queue name. Order is checked in the sink.
import type { BenchContext } from '../context.ts';
import { describe, exact, throughputRun } from './throughputRun.ts';

export async function runW5(ctx: BenchContext): Promise<void> {
  for (const system of ctx.systems.filter((s) => s.supportsOrdered)) {
    const unordered = await throughputRun(ctx, system, { label: 'w5_unordered' });
    const ordered = await throughputRun(ctx, system, { label: 'w5_ordered', install: { ordered: true } });
    ctx.data[`W5 ${system.name}`] = { unordered, ordered };
    const how = system.name === 'rppd' ? "topic '.k', queue=true" : "queue_name 'k'||k";
    ctx.record({
      workload: 'W5',
      case: `${ctx.options.sizes.rows} rows, 1,000 keys`,
      system: system.name,
      metric: 'unordered events/s',
      value: unordered.rate,
      unit: 'ev/s',
      otherCores: unordered.otherCores,
      note: `${exact(unordered) ? 'exact' : 'NOT EXACT'}: ${describe(unordered)}`,
    });
    const ratio = ordered.rate / unordered.rate;
    ctx.record({
      workload: 'W5',
      case: `${ctx.options.sizes.rows} rows, 1,000 keys`,
      system: system.name,
      metric: `ordered (${how}) events/s`,
      value: ordered.rate,
      unit: 'ev/s',
      ratio,
      ratioTo: 'unordered',
      target: system.name === 'rppd' ? { text: '≥ 0.8', pass: ratio >= 0.8 } : undefined,
      otherCores: ordered.otherCores,
      note: `${exact(ordered) ? 'exact' : 'NOT EXACT'}: ${describe(ordered)}`,
    });
  }
}

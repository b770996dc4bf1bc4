// W4 Python: W2 with the handler written in Python (rppd only), as a share of the JS rate.
import type { BenchContext } from '../context.ts';
import { describe, exact, throughputRun } from './throughputRun.ts';

export async function runW4(ctx: BenchContext): Promise<void> {
  const rppd = ctx.systems.find((s) => s.name === 'rppd')!;
  const caseName = `${ctx.options.sizes.rows} rows, Python handler`;
  const py = await throughputRun(ctx, rppd, { label: 'w4', install: { lang: 'python' } });
  ctx.data['W4 rppd python'] = py;
  // The JS reference: W2's figure from this run, else a JS run now.
  let js = ctx.find('W2', 'rppd', 'events/s')?.value;
  let jsFrom = 'W2 JS rate';
  if (js === undefined) {
    js = (await throughputRun(ctx, rppd, { label: 'w4_js' })).rate;
    jsFrom = 'JS rate (run in W4)';
  }
  ctx.record({
    workload: 'W4',
    case: caseName,
    system: 'rppd',
    metric: 'events/s',
    value: py.rate,
    unit: 'ev/s',
    ratio: py.rate / js,
    ratioTo: jsFrom,
    target: { text: '≥ 0.5', pass: py.rate / js >= 0.5 },
    otherCores: py.otherCores,
    note: `${exact(py) ? 'exact' : 'NOT EXACT'}: ${describe(py)}`,
  });
}

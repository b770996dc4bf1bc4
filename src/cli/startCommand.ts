// rppd start: one node until SIGTERM/SIGINT, then a graceful stop.
import { resolveSettings } from '../config/resolveSettings.ts';
import { describeSettings } from '../config/settings.ts';
import { startNode } from '../node.ts';

export async function runStart(argv: string[]): Promise<number> {
  const settings = resolveSettings(argv, process.env);
  for (const warning of settings.warnings) console.error(`rppd: ${warning}`);
  if (settings.verbose) for (const line of describeSettings(settings)) console.error(`rppd: ${line}`);
  const node = await startNode(settings);
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      console.error(`rppd: second ${sig}, exiting now`);
      process.exit(130);
    }
    void node.stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await node.stopped;
  return 0;
}

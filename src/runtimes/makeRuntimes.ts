// The runtimes a node offers: JS/TS always; Python when an interpreter with
// psycopg is found (otherwise Python functions fail with the reason).
import type { Settings } from '../config/settings.ts';
import type { Logger } from '../log/logger.ts';
import { describeError } from '../util/errors.ts';
import { makeJsRuntime } from './js/jsRuntime.ts';
import { findPython } from './python/findPython.ts';
import { makePythonRuntime } from './python/pythonRuntime.ts';
import type { Lang, Runtime, RuntimeOptions } from './runtime.ts';

export interface NodeRuntimes {
  runtimes: Runtime[];
  unavailable: Partial<Record<Lang, string>>;
  langs: Lang[];
}

export async function makeRuntimes(settings: Settings, maxWorkers: number, log: Logger): Promise<NodeRuntimes> {
  const options: RuntimeOptions = {
    dbUrl: settings.url,
    maxWorkers,
    outputLimitBytes: settings.outputLimitBytes,
    memoryLimitMb: settings.memoryLimitMb,
    cacheDir: settings.cacheDir,
    pythonPath: settings.python,
  };
  const runtimes: Runtime[] = [
    makeJsRuntime({
      ...options,
      prewarm: true,
      prepareThreshold: settings.prepareThreshold,
      runAhead: settings.runAhead > 0,
      onWorkerError: (message) => log.warn(`js worker crashed between runs: ${message}`),
    }),
  ];
  const unavailable: Partial<Record<Lang, string>> = {};
  try {
    const python = await findPython(settings.python);
    runtimes.push(makePythonRuntime({ ...options, pythonPath: python.path }));
    log.info({ python: python.path, driver: python.driver }, 'python runtime ready');
  } catch (err) {
    unavailable.python = `Python runtime unavailable on node ${settings.name}: ${describeError(err)}`;
    log.warn(unavailable.python);
  }
  return { runtimes, unavailable, langs: runtimes.flatMap((rt) => [...rt.langs]) };
}

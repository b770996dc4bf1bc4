// One pino logger per node; node events become log lines here and nowhere else.
import pino from 'pino';
import type { NodeEvents } from '../events/nodeEvents.ts';
import { describeError } from '../util/errors.ts';

export type Logger = pino.Logger;

export function makeLogger(level: string, name = 'rppd'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}

export function logNodeEvents(events: NodeEvents, log: Logger): void {
  events.on('node:registered', (e) => log.info(e, 'registered in rppd_config'));
  events.on('lease:acquired', (e) => log.info(e, 'master: lease acquired'));
  events.on('lease:lost', (e) => log.warn(e, 'master lease lost'));
  events.on('config:reloaded', (e) => log.debug(e, 'config reloaded'));
  events.on('events:admitted', (e) => log.trace(e, 'events admitted'));
  events.on('run:finished', (e) => {
    if (e.ok) log.debug(e, 'run finished');
    else log.warn({ ...e }, `run failed (${e.kind}): ${e.error}`);
  });
  events.on('run:retry', (e) => log.info(e, 'run will be retried'));
  events.on('dispatch:wake-mode', (e) => log.debug(e, 'dispatch wake mode'));
  events.on('db:error', (e) => log.warn({ where: e.where }, `database: ${describeError(e.error)}`));
}

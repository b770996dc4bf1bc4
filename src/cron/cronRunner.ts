// Fires schedules on the master only (one node fires, not every node as in the
// original). Times come from the database clock; the event a firing makes goes
// through the normal dispatch path and runs only the schedule's function.
import type pg from 'pg';
import { type CronRow, databaseNow, fireCron, loadCrons, setCronInvalid } from '../db/queries/cron.ts';
import type { NodeEvents } from '../events/nodeEvents.ts';
import { coerceError } from '../util/errors.ts';
import { dueTime, type ParsedCron, parseCron } from './cronSchedule.ts';

export interface CronRunner {
  reload(): void;
  stop(): void;
}

export interface CronRunnerOptions {
  pool: pg.Pool;
  schema: string;
  events: NodeEvents;
  /** Fired: wake the dispatcher so the event runs at once. */
  onFired: () => void;
  tickMs?: number;
}

export function startCronRunner(o: CronRunnerOptions): CronRunner {
  const tickMs = o.tickMs ?? 1000;
  let crons: { row: CronRow; parsed: ParsedCron; since: Date }[] = [];
  let stale = true;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  async function refresh(now: Date): Promise<void> {
    const rows = await loadCrons(o.pool, o.schema);
    const previous = new Map(crons.map((c) => [c.row.id, c]));
    crons = [];
    for (const row of rows) {
      const parsed = parseCron(row.cron);
      await setCronInvalid(o.pool, o.schema, row.id, parsed.ok ? null : parsed.error);
      const old = previous.get(row.id);
      // A schedule seen for the first time starts from its last firing, or from now.
      const since = old && old.row.cron === row.cron ? old.since : (row.started_at ?? now);
      crons.push({ row, parsed, since });
    }
    stale = false;
  }

  async function tick(): Promise<void> {
    const now = await databaseNow(o.pool);
    if (stale) await refresh(now);
    for (const c of crons) {
      const due = dueTime(c.parsed, c.since, now);
      if (!due) continue;
      c.since = due;
      const eventId = await fireCron(o.pool, o.schema, c.row.id, due);
      if (eventId) o.onFired();
    }
  }

  async function loop(): Promise<void> {
    if (stopped) return;
    try {
      await tick();
    } catch (err) {
      o.events.emit('db:error', { where: 'cron', error: coerceError(err) });
      stale = true;
    }
    if (!stopped) timer = setTimeout(() => void loop(), tickMs);
  }

  void loop();
  return {
    reload() {
      stale = true;
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

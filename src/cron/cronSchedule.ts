// Pure schedule arithmetic over croner: 5-field (minute resolution) or 6-field
// (seconds) cron expressions, evaluated in UTC on times from the database clock.
import { Cron } from 'croner';
import { invalidCronPrefix } from '../db/queries/cron.ts';

export type ParsedCron = { ok: true; next(after: Date): Date | null } | { ok: false; error: string };

export function parseCron(expression: string): ParsedCron {
  try {
    const cron = new Cron(expression.trim(), { timezone: 'UTC', paused: true });
    return { ok: true, next: (after) => cron.nextRun(after) };
  } catch (err) {
    return { ok: false, error: `${invalidCronPrefix} "${expression}": ${(err as Error).message}` };
  }
}

/**
 * The latest scheduled time in (since, now], or null when none is due. Firings
 * missed while no master ran collapse into one (the latest).
 */
export function dueTime(cron: ParsedCron, since: Date, now: Date): Date | null {
  if (!cron.ok) return null;
  let due: Date | null = null;
  let at = since;
  for (let i = 0; i < 10_000; i++) {
    const next = cron.next(at);
    if (!next || next > now) break;
    due = next;
    at = next;
  }
  return due;
}

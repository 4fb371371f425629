// Pure: the slots of a SnapshotPolicy's schedule, read as CloudStack reads it (HOURLY "MM", DAILY
// "MM:HH", WEEKLY "MM:HH:D" with 1 = Sunday, MONTHLY "MM:HH:DD") in an IANA time zone. Wall-clock
// times are turned into instants with Intl.DateTimeFormat: a time that does not exist (the hour a
// DST change skips) runs that much later, one that exists twice runs the first time (HOURLY: both),
// and a MONTHLY day past the month's end runs on its last day, as CloudStack does.
import type { SnapshotInterval } from "../../crds/index.ts";

export interface Schedule {
  minute: number;
  hour: number;
  /** WEEKLY: 1 (Sunday) to 7. */
  dayOfWeek?: number;
  /** MONTHLY: 1 to 31. */
  dayOfMonth?: number;
}

export interface Slots {
  /** The latest slot at or before now. */
  last: Date;
  /** The first slot after now. */
  next: Date;
}

const FIELDS: Record<SnapshotInterval, number> = { HOURLY: 1, DAILY: 2, WEEKLY: 3, MONTHLY: 3 };

/** The schedule's fields, or why it is not one (the CRD checks the format too; this is the guard). */
export function parseSchedule(interval: SnapshotInterval, schedule: string): Schedule | { problem: string } {
  const parts = schedule.split(":");
  const numbers = parts.map((p) => (/^\d{1,2}$/.test(p) ? Number(p) : Number.NaN));
  const [minute = Number.NaN, hour = 0, day = Number.NaN] = numbers;
  const lastDay = interval === "WEEKLY" ? 7 : 31;
  if (
    parts.length !== FIELDS[interval] ||
    numbers.some(Number.isNaN) ||
    minute > 59 ||
    hour > 23 ||
    (FIELDS[interval] === 3 && (day < 1 || day > lastDay))
  )
    return { problem: `schedule "${schedule}" is not a ${interval} schedule (${FORMATS[interval]})` };
  if (interval === "WEEKLY") return { minute, hour, dayOfWeek: day };
  if (interval === "MONTHLY") return { minute, hour, dayOfMonth: day };
  return { minute, hour };
}

const FORMATS: Record<SnapshotInterval, string> = {
  HOURLY: "MM",
  DAILY: "MM:HH",
  WEEKLY: "MM:HH:D, 1 = Sunday",
  MONTHLY: "MM:HH:DD",
};

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Throws a RangeError for a time zone Intl does not know. */
function formatter(timeZone: string): Intl.DateTimeFormat {
  let format = formatters.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(timeZone, format);
  }
  return format;
}

/** Whether Intl knows the time zone. */
export function isTimeZone(timeZone: string): boolean {
  try {
    formatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

/** The wall-clock time at `instant` in the zone, as milliseconds of a UTC date with those fields. */
function wallClock(instant: number, timeZone: string): number {
  const fields: Record<string, number> = {};
  for (const part of formatter(timeZone).formatToParts(instant))
    if (part.type !== "literal") fields[part.type] = Number(part.value);
  const { year = 0, month = 1, day = 1, hour = 0, minute = 0, second = 0 } = fields;
  return Date.UTC(year, month - 1, day, hour, minute, second);
}

const DAY_MS = 86_400_000;

/**
 * The instants at which the zone's clocks show `wall` (a UTC date holding the wall-clock fields):
 * one, two when clocks go back over it, or, when clocks skip it, the instant as far past the gap.
 */
export function instantsOf(wall: number, timeZone: string): number[] {
  // Offsets a day either side: no zone changes its offset twice within two days.
  const before = wallClock(wall - DAY_MS, timeZone) - (wall - DAY_MS);
  const after = wallClock(wall + DAY_MS, timeZone) - (wall + DAY_MS);
  const found = [...new Set([wall - before, wall - after])]
    .filter((instant) => wallClock(instant, timeZone) === wall)
    .sort((a, b) => a - b);
  // In a gap, the offset from before the change carries the time forward by the gap's length.
  return found.length > 0 ? found : [wall - before];
}

const daysInMonth = (year: number, month: number) => new Date(Date.UTC(year, month + 1, 0)).getUTCDate();

/** Wall-clock times (UTC dates holding the fields) of the schedule around the wall date `around`. */
function wallSlots(interval: SnapshotInterval, schedule: Schedule, around: number): number[] {
  const date = new Date(around);
  const [year, month, day] = [date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()];
  const { minute, hour } = schedule;
  const days = (from: number, to: number) =>
    Array.from({ length: to - from + 1 }, (_, i) => Date.UTC(year, month, day + from + i));
  switch (interval) {
    case "HOURLY":
      return days(-1, 1).flatMap((d) => Array.from({ length: 24 }, (_, h) => d + (h * 60 + minute) * 60_000));
    case "DAILY":
      return days(-2, 2).map((d) => d + (hour * 60 + minute) * 60_000);
    case "WEEKLY":
      return days(-8, 8)
        .filter((d) => new Date(d).getUTCDay() + 1 === schedule.dayOfWeek)
        .map((d) => d + (hour * 60 + minute) * 60_000);
    case "MONTHLY":
      return [-2, -1, 0, 1, 2].map((m) => {
        const [y, mo] = [new Date(Date.UTC(year, month + m, 1)).getUTCFullYear(), (month + m + 12) % 12];
        const d = Math.min(schedule.dayOfMonth ?? 1, daysInMonth(y, mo));
        return Date.UTC(y, mo, d, hour, minute);
      });
  }
}

/** The latest slot at or before `now` and the first after it. Throws a RangeError for an unknown zone. */
export function scheduleSlots(
  interval: SnapshotInterval,
  schedule: Schedule,
  timeZone: string,
  now: Date,
): Slots {
  const instants = wallSlots(interval, schedule, wallClock(now.getTime(), timeZone))
    .flatMap((wall) => {
      const at = instantsOf(wall, timeZone);
      // Once a day or less: the first of two; hourly: each hour the clocks show.
      return interval === "HOURLY" ? at : at.slice(0, 1);
    })
    .sort((a, b) => a - b);
  const t = now.getTime();
  const last = instants.filter((i) => i <= t).at(-1);
  const next = instants.find((i) => i > t);
  if (last === undefined || next === undefined)
    throw new Error(`no slot of the ${interval} schedule around ${now.toISOString()} in ${timeZone}`);
  return { last: new Date(last), next: new Date(next) };
}

import { describe, expect, it } from "vitest";
import type { SnapshotInterval } from "../../crds/index.ts";
import { instantsOf, isTimeZone, parseSchedule, type Schedule, scheduleSlots } from "./snapshot-schedule.ts";

function slots(interval: SnapshotInterval, schedule: string, timeZone: string, now: string) {
  const parsed = parseSchedule(interval, schedule) as Schedule;
  const { last, next } = scheduleSlots(interval, parsed, timeZone, new Date(now));
  return { last: last.toISOString(), next: next.toISOString() };
}

describe("parseSchedule", () => {
  it.each([
    ["HOURLY", "5", { minute: 5, hour: 0 }],
    ["DAILY", "30:14", { minute: 30, hour: 14 }],
    ["WEEKLY", "00:09:1", { minute: 0, hour: 9, dayOfWeek: 1 }],
    ["MONTHLY", "15:01:31", { minute: 15, hour: 1, dayOfMonth: 31 }],
  ] as const)("%s %s", (interval, schedule, expected) => {
    expect(parseSchedule(interval, schedule)).toEqual(expected);
  });

  it.each([
    ["HOURLY", "60"],
    ["HOURLY", "10:02"],
    ["DAILY", "10:24"],
    ["DAILY", "10"],
    ["WEEKLY", "0:0:8"],
    ["WEEKLY", "0:0:0"],
    ["MONTHLY", "0:0:32"],
    ["MONTHLY", "a:0:1"],
  ] as const)("refuses %s %s", (interval, schedule) => {
    expect(parseSchedule(interval, schedule)).toHaveProperty("problem");
  });
});

describe("scheduleSlots", () => {
  it.each([
    // [interval, schedule, zone, now, last, next]
    ["DAILY", "30:14", "UTC", "2025-03-10T15:00:00Z", "2025-03-10T14:30:00.000Z", "2025-03-11T14:30:00.000Z"],
    ["DAILY", "30:14", "UTC", "2025-03-10T14:00:00Z", "2025-03-09T14:30:00.000Z", "2025-03-10T14:30:00.000Z"],
    // exactly at the slot: it is the latest one
    ["DAILY", "30:14", "UTC", "2025-03-10T14:30:00Z", "2025-03-10T14:30:00.000Z", "2025-03-11T14:30:00.000Z"],
    ["HOURLY", "05", "UTC", "2025-03-10T10:04:59Z", "2025-03-10T09:05:00.000Z", "2025-03-10T10:05:00.000Z"],
    // a half-hour zone: its hour starts at half past in UTC
    [
      "HOURLY",
      "0",
      "Asia/Kolkata",
      "2025-03-10T10:00:00Z",
      "2025-03-10T09:30:00.000Z",
      "2025-03-10T10:30:00.000Z",
    ],
    // 2025-03-12 is a Wednesday; 1 = Sunday, 7 = Saturday
    [
      "WEEKLY",
      "0:9:1",
      "UTC",
      "2025-03-12T00:00:00Z",
      "2025-03-09T09:00:00.000Z",
      "2025-03-16T09:00:00.000Z",
    ],
    [
      "WEEKLY",
      "0:9:7",
      "UTC",
      "2025-03-12T00:00:00Z",
      "2025-03-08T09:00:00.000Z",
      "2025-03-15T09:00:00.000Z",
    ],
    [
      "DAILY",
      "0:23",
      "America/New_York",
      "2025-03-10T12:00:00Z",
      "2025-03-10T03:00:00.000Z",
      "2025-03-11T03:00:00.000Z",
    ],
  ] as const)("%s %s in %s at %s", (interval, schedule, zone, now, last, next) => {
    expect(slots(interval, schedule, zone, now)).toEqual({ last, next });
  });

  describe("MONTHLY on day 31 runs on the last day of short months", () => {
    it.each([
      ["2025-02-15T00:00:00Z", "2025-01-31T01:00:00.000Z", "2025-02-28T01:00:00.000Z"],
      ["2024-02-15T00:00:00Z", "2024-01-31T01:00:00.000Z", "2024-02-29T01:00:00.000Z"],
      ["2025-04-30T02:00:00Z", "2025-04-30T01:00:00.000Z", "2025-05-31T01:00:00.000Z"],
      ["2025-03-01T00:00:00Z", "2025-02-28T01:00:00.000Z", "2025-03-31T01:00:00.000Z"],
    ])("at %s", (now, last, next) => {
      expect(slots("MONTHLY", "0:1:31", "UTC", now)).toEqual({ last, next });
    });

    it("across the year's end in a zone behind UTC", () => {
      expect(slots("MONTHLY", "0:0:31", "America/New_York", "2025-01-10T12:00:00Z")).toEqual({
        last: "2024-12-31T05:00:00.000Z", // 31 Dec 00:00 EST
        next: "2025-01-31T05:00:00.000Z", // 31 Jan 00:00 EST
      });
    });

    it("by the zone's calendar when UTC is still in the month before", () => {
      // 2025-02-28T12:00Z is 1 March 01:00 in Auckland (NZDT, +13).
      expect(slots("MONTHLY", "0:0:31", "Pacific/Auckland", "2025-02-28T12:00:00Z")).toEqual({
        last: "2025-02-27T11:00:00.000Z", // 28 Feb 00:00 NZDT
        next: "2025-03-30T11:00:00.000Z", // 31 Mar 00:00 NZDT
      });
    });
  });

  describe("DST in Europe/Berlin (2025-03-30 02:00 CET -> 03:00 CEST, 2025-10-26 03:00 CEST -> 02:00 CET)", () => {
    it.each([
      // [what, interval, schedule, now, last, next]
      [
        "a daily time the clocks skip runs as much later (02:30 -> 03:30 CEST)",
        "DAILY",
        "30:02",
        "2025-03-30T12:00:00Z",
        "2025-03-30T01:30:00.000Z",
        "2025-03-31T00:30:00.000Z",
      ],
      [
        "the day before the skip, 02:30 CET",
        "DAILY",
        "30:02",
        "2025-03-29T12:00:00Z",
        "2025-03-29T01:30:00.000Z",
        "2025-03-30T01:30:00.000Z",
      ],
      [
        "a daily time that happens twice runs once, the first time",
        "DAILY",
        "30:02",
        "2025-10-26T12:00:00Z",
        "2025-10-26T00:30:00.000Z",
        "2025-10-27T01:30:00.000Z",
      ],
      [
        "hourly runs every hour the clocks show: both 02:30 in autumn",
        "HOURLY",
        "30",
        "2025-10-26T01:00:00Z",
        "2025-10-26T00:30:00.000Z",
        "2025-10-26T01:30:00.000Z",
      ],
      [
        "hourly skips no real hour in spring (the skipped 02:30 is 03:30)",
        "HOURLY",
        "30",
        "2025-03-30T01:00:00Z",
        "2025-03-30T00:30:00.000Z",
        "2025-03-30T01:30:00.000Z",
      ],
    ] as const)("%s", (_what, interval, schedule, now, last, next) => {
      expect(slots(interval, schedule, "Europe/Berlin", now)).toEqual({ last, next });
    });

    it("instantsOf: one, two or the shifted one", () => {
      const wall = (iso: string) => Date.parse(iso);
      const iso = (instants: number[]) => instants.map((i) => new Date(i).toISOString());
      expect(iso(instantsOf(wall("2025-07-01T12:00:00Z"), "Europe/Berlin"))).toEqual([
        "2025-07-01T10:00:00.000Z",
      ]);
      expect(iso(instantsOf(wall("2025-10-26T02:30:00Z"), "Europe/Berlin"))).toEqual([
        "2025-10-26T00:30:00.000Z",
        "2025-10-26T01:30:00.000Z",
      ]);
      expect(iso(instantsOf(wall("2025-03-30T02:30:00Z"), "Europe/Berlin"))).toEqual([
        "2025-03-30T01:30:00.000Z",
      ]);
    });
  });

  it("an unknown time zone is a RangeError", () => {
    expect(isTimeZone("Europe/Berlin")).toBe(true);
    expect(isTimeZone("Mars/Olympus")).toBe(false);
    expect(() => scheduleSlots("DAILY", { minute: 0, hour: 0 }, "Mars/Olympus", new Date())).toThrow(
      RangeError,
    );
  });
});

import { describe, expect, it } from "vitest";
import type { SnapshotPolicy, Volume, VolumeSnapshot } from "../crds/index.ts";
import {
  generatedSnapshotName,
  intervalType,
  maxSnapshots,
  policyName,
  snapshotName,
  snapshotTypeFilter,
  timeZone,
} from "./snapshot-input.ts";
import { snapshotPolicyView, snapshotState, snapshotView } from "./snapshot-views.ts";
import { refusal } from "./testing/refusal.ts";

describe("snapshot parameters", () => {
  it("reads interval types in any case and refuses others", () => {
    expect(intervalType("hourly")).toBe("HOURLY");
    expect(intervalType(" Monthly ")).toBe("MONTHLY");
    expect(refusal(() => intervalType("yearly"))).toBe(
      "Unsupported interval type yearly: it is one of HOURLY, DAILY, WEEKLY, MONTHLY",
    );
  });

  it("accepts IANA time zones only", () => {
    expect(timeZone("Europe/Berlin")).toBe("Europe/Berlin");
    expect(timeZone("UTC")).toBe("UTC");
    expect(refusal(() => timeZone("Mars/Olympus"))).toContain("not a known time zone");
    expect(refusal(() => timeZone("Europe/Berlin; rm"))).toContain("IANA name");
    expect(refusal(() => timeZone("A".repeat(65)))).toContain("at most 64");
  });

  it("keeps 1 to 100 snapshots", () => {
    expect(maxSnapshots(8, "DAILY")).toBe(8);
    expect(refusal(() => maxSnapshots(0, "DAILY"))).toBe("maxSnaps should be greater than 0");
    expect(refusal(() => maxSnapshots(101, "HOURLY"))).toBe(
      "maxSnaps exceeds limit: 100 for interval type: HOURLY",
    );
  });

  it("names snapshots as DNS labels", () => {
    expect(snapshotName("Before-Upgrade")).toBe("before-upgrade");
    expect(refusal(() => snapshotName("with space"))).toContain("1 to 63 lower-case letters");
    expect(refusal(() => snapshotName("x".repeat(64)))).toContain("1 to 63");
    expect(generatedSnapshotName("data-1", new Date("2026-03-04T05:06:07.890Z"))).toBe(
      "data-1-20260304050607",
    );
    const long = generatedSnapshotName("v".repeat(100), new Date("2026-03-04T05:06:07Z"));
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long.endsWith("-20260304050607")).toBe(true);
  });

  it("names one policy per volume and interval, short enough for a label value", () => {
    expect(policyName("data-1", "DAILY")).toBe("data-1-daily");
    const a = policyName(`${"v".repeat(60)}a`, "MONTHLY");
    const b = policyName(`${"v".repeat(60)}b`, "MONTHLY");
    expect(a.length).toBeLessThanOrEqual(63);
    expect(a).not.toBe(b);
    expect(a).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  });

  it("filters by MANUAL, RECURRING or an interval", () => {
    expect(snapshotTypeFilter(undefined)).toBeUndefined();
    expect(snapshotTypeFilter("manual")).toBe("MANUAL");
    expect(snapshotTypeFilter("Recurring")).toBe("RECURRING");
    expect(snapshotTypeFilter("weekly")).toBe("WEEKLY");
    expect(refusal(() => snapshotTypeFilter("template"))).toContain("Unsupported snapshot type template");
  });
});

const volume = {
  metadata: { name: "data-1", namespace: "team-a", uid: "11111111-1111-4111-8111-111111111111" },
  spec: { zone: "z1", type: "DATADISK" },
} as Volume;
const policy = {
  metadata: { name: "data-1-daily", namespace: "team-a", uid: "22222222-2222-4222-8222-222222222222" },
  spec: { volume: "data-1", intervalType: "DAILY", schedule: "30:02", maxSnapshots: 7 },
} as SnapshotPolicy;
const catalog = {
  zone: (name: string) =>
    name === "z1"
      ? ({ metadata: { name: "z1", uid: "33333333-3333-4333-8333-333333333333" } } as never)
      : undefined,
  volume: (_: string, name: string) => (name === "data-1" ? volume : undefined),
  snapshotPolicy: (_: string, name: string) => (name === "data-1-daily" ? policy : undefined),
};
const snapshot = (status: VolumeSnapshot["status"], labels?: Record<string, string>): VolumeSnapshot =>
  ({
    metadata: {
      name: "s1",
      namespace: "team-a",
      uid: "44444444-4444-4444-8444-444444444444",
      creationTimestamp: "2026-01-02T03:04:05Z",
      ...(labels ? { labels } : {}),
    },
    spec: { volume: "data-1" },
    ...(status ? { status } : {}),
  }) as VolumeSnapshot;

describe("snapshot views", () => {
  it.each([
    [undefined, "Creating"],
    [{ phase: "Pending" }, "Creating"],
    [{ phase: "Creating" }, "Creating"],
    [{ phase: "Ready" }, "BackedUp"],
    [{ phase: "Error" }, "Error"],
    [{ phase: "Deleting" }, "Destroying"],
  ] as const)("shows phase %j as %s", (status, state) => {
    expect(snapshotState(snapshot(status as VolumeSnapshot["status"]))).toBe(state);
  });

  it("shows a manual snapshot with CloudStack's fields and types", () => {
    const view = snapshotView(
      snapshot({ phase: "Ready", zone: "z1", size: "512Mi", virtualSize: "2Gi", volumeType: "DATADISK" }),
      catalog,
    );
    expect(view).toEqual({
      id: "44444444-4444-4444-8444-444444444444",
      name: "s1",
      account: "team-a",
      domain: "ROOT",
      volumeid: volume.metadata.uid,
      volumename: "data-1",
      volumetype: "DATADISK",
      snapshottype: "MANUAL",
      intervaltype: "MANUAL",
      state: "BackedUp",
      created: "2026-01-02T03:04:05+0000",
      physicalsize: 512 * 1024 ** 2,
      virtualsize: 2 * 1024 ** 3,
      zoneid: "33333333-3333-4333-8333-333333333333",
      zonename: "z1",
      locationtype: "SECONDARY",
      revertable: true,
      hasannotations: false,
      tags: [],
    });
  });

  it("shows a recurring snapshot with its policy's interval", () => {
    const view = snapshotView(
      snapshot({ phase: "Creating" }, { "stratus.io/snapshot-policy": "data-1-daily" }),
      catalog,
    );
    expect(view).toMatchObject({
      snapshottype: "RECURRING",
      intervaltype: "DAILY",
      state: "Creating",
      revertable: false,
    });
    expect(view).not.toHaveProperty("physicalsize");
  });

  it("shows a policy with the interval as its ordinal", () => {
    expect(snapshotPolicyView(policy, catalog)).toEqual({
      id: policy.metadata.uid,
      volumeid: volume.metadata.uid,
      schedule: "30:02",
      intervaltype: 1,
      maxsnaps: 7,
      timezone: "UTC",
      fordisplay: true,
      hasannotations: false,
      tags: [],
    });
  });
});

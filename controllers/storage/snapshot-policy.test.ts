import { describe, expect, it } from "vitest";
import { SNAPSHOT_POLICY_LABEL, type SnapshotPolicy, type VolumeSnapshot } from "../../crds/index.ts";
import {
  decideSnapshotPolicy,
  MAX_SLOT_WAIT_MS,
  type PolicyInput,
  SNAPSHOT_SLOT_ANNOTATION,
  slotOf,
  slotSnapshotName,
  snapshotsToPrune,
} from "./snapshot-policy.ts";

const NOW = new Date("2026-03-10T15:00:00Z");

const policy = (
  spec: Partial<SnapshotPolicy["spec"]> = {},
  status?: SnapshotPolicy["status"],
  name = "nightly",
): SnapshotPolicy => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "SnapshotPolicy",
  metadata: { name, namespace: "a", generation: 2, creationTimestamp: "2026-03-01T00:00:00Z" },
  spec: {
    volume: "data",
    intervalType: "DAILY",
    schedule: "30:14",
    timezone: "UTC",
    maxSnapshots: 3,
    ...spec,
  },
  ...(status ? { status } : {}),
});

const snap = (name: string, extra: Partial<VolumeSnapshot["metadata"]> = {}): VolumeSnapshot => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "VolumeSnapshot",
  metadata: { name, namespace: "a", labels: { [SNAPSHOT_POLICY_LABEL]: "nightly" }, ...extra },
  spec: { volume: "data" },
});

const decide = (overrides: Partial<PolicyInput> = {}) =>
  decideSnapshotPolicy({ policy: policy(), volumeExists: true, snapshots: [], now: NOW, ...overrides });

const names = (snapshots: readonly VolumeSnapshot[]) => snapshots.map((s) => s.metadata.name);

describe("decideSnapshotPolicy", () => {
  it("takes the latest slot: one snapshot named after the policy and the slot (UTC)", () => {
    const decision = decide();
    expect(decision.create?.metadata).toEqual({
      name: "nightly-202603101430",
      namespace: "a",
      labels: { [SNAPSHOT_POLICY_LABEL]: "nightly" },
      annotations: { [SNAPSHOT_SLOT_ANNOTATION]: "2026-03-10T14:30:00Z" },
    });
    expect(decision.create?.metadata.ownerReferences).toBeUndefined();
    expect(decision.create?.spec).toEqual({ volume: "data" });
    expect(decision.status).toMatchObject({
      lastSlot: "2026-03-10T14:30:00Z",
      nextSlot: "2026-03-11T14:30:00Z",
      snapshots: 1,
      conditions: [expect.objectContaining({ type: "Ready", status: "True", reason: "Scheduled" })],
    });
    expect(decision.requeueAfterMs).toBe(MAX_SLOT_WAIT_MS);
  });

  it("requeues just past the next slot when it is within the cap", () => {
    const decision = decide({ policy: policy({ intervalType: "HOURLY", schedule: "5" }) });
    expect(decision.requeueAfterMs).toBe(5 * 60_000 + 1_000);
  });

  it("takes no slot from before the policy existed", () => {
    const young = policy();
    young.metadata.creationTimestamp = "2026-03-10T14:30:01Z";
    const decision = decide({ policy: young });
    expect(decision.create).toBeUndefined();
    expect(decision.status.lastSlot).toBeUndefined();
    expect(decision.status.nextSlot).toBe("2026-03-11T14:30:00Z");
  });

  it("does not take a slot again that it recorded (its snapshot may have been deleted since)", () => {
    const decision = decide({ policy: policy({}, { lastSlot: "2026-03-10T14:30:00Z" }) });
    expect(decision.create).toBeUndefined();
    expect(decision.status.lastSlot).toBe("2026-03-10T14:30:00Z");
  });

  it("after missed slots takes only the latest one", () => {
    const decision = decide({ policy: policy({}, { lastSlot: "2026-03-05T14:30:00Z" }) });
    expect(decision.create?.metadata.name).toBe("nightly-202603101430");
    expect(decision.prune).toEqual([]);
  });

  it("keeps the newest maxSnapshots by slot, whatever their creation order or phase", () => {
    // Created newest-slot-first, so creation time says the opposite of the slots.
    const older = [
      "nightly-202603091430",
      "nightly-202603081430",
      "nightly-202603071430",
      "nightly-202603061430",
    ].map((name, i) => snap(name, { creationTimestamp: `2026-03-10T0${i}:00:00Z` }));
    const decision = decide({ snapshots: older });
    expect(decision.create?.metadata.name).toBe("nightly-202603101430");
    expect(names(decision.prune)).toEqual(["nightly-202603071430", "nightly-202603061430"]);
    expect(decision.status.snapshots).toBe(3);
  });

  it("counts the slot's snapshot once when the cache has it already", () => {
    const decision = decide({ snapshots: [snap("nightly-202603101430")] });
    expect(decision.status.snapshots).toBe(1);
  });

  it.each([
    ["VolumeNotFound", { volumeExists: false }],
    ["InvalidTimezone", { policy: policy({ timezone: "Mars/Olympus" }) }],
    ["InvalidSchedule", { policy: policy({ schedule: "99:99" }) }],
    ["NameTooLong", { policy: policy({}, undefined, "n".repeat(64)) }],
  ] as const)("is not Ready (%s) and takes nothing", (reason, overrides) => {
    const decision = decide({ ...overrides, snapshots: [snap("nightly-202603091430")] });
    expect(decision.create).toBeUndefined();
    expect(decision.prune).toEqual([]);
    expect(decision.requeueAfterMs).toBeUndefined();
    expect(decision.status.snapshots).toBe(1);
    expect(decision.status.conditions).toEqual([
      expect.objectContaining({ type: "Ready", status: "False", reason }),
    ]);
  });
});

describe("slots of snapshots", () => {
  it("from the annotation, else the name's stamp, else creation", () => {
    expect(slotOf(snap("x", { annotations: { [SNAPSHOT_SLOT_ANNOTATION]: "2026-01-02T03:04:00Z" } }))).toBe(
      Date.parse("2026-01-02T03:04:00Z"),
    );
    expect(slotOf(snap("nightly-202601020304"))).toBe(Date.parse("2026-01-02T03:04:00Z"));
    expect(slotOf(snap("manual", { creationTimestamp: "2026-01-05T00:00:00Z" }))).toBe(
      Date.parse("2026-01-05T00:00:00Z"),
    );
    expect(slotSnapshotName("p", new Date("2026-12-31T23:59:00Z"))).toBe("p-202612312359");
  });

  it("never prunes the newest Ready snapshot, even when newer unfinished ones fill the quota", () => {
    const ready = { ...snap("p-202601010000"), status: { phase: "Ready" as const } };
    const { kept, pruned } = snapshotsToPrune([snap("p-202601030000"), snap("p-202601020000"), ready], 1);
    expect(kept.map((s) => s.metadata.name)).toEqual(["p-202601030000", "p-202601010000"]);
    expect(pruned.map((s) => s.metadata.name)).toEqual(["p-202601020000"]);
  });

  it("snapshots being deleted are neither kept nor deleted again", () => {
    const { kept, pruned } = snapshotsToPrune(
      [
        snap("p-202601030000", { deletionTimestamp: "2026-01-04T00:00:00Z" }),
        snap("p-202601020000"),
        snap("p-202601010000"),
      ],
      1,
    );
    expect(names(kept)).toEqual(["p-202601020000"]);
    expect(names(pruned)).toEqual(["p-202601010000"]);
  });
});

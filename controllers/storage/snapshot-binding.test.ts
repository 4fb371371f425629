import { describe, expect, it } from "vitest";
import type { Volume, VolumeSnapshot } from "../../crds/index.ts";
import { decideSnapshotBinding } from "./snapshot-binding.ts";

const NOW = new Date("2026-01-01T00:00:00Z");

const snapshot = (status?: VolumeSnapshot["status"], deleting = false): VolumeSnapshot => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "VolumeSnapshot",
  metadata: {
    name: "snap",
    namespace: "a",
    generation: 1,
    ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}),
  },
  spec: { volume: "data" },
  ...(status ? { status } : {}),
});

const volume = (status?: Volume["status"], type?: "ROOT", deleting = false): Volume => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Volume",
  metadata: {
    name: "data",
    namespace: "a",
    ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}),
  },
  spec: { zone: "z1", size: "1Gi", ...(type ? { type } : {}) },
  ...(status ? { status } : {}),
});

const onH1 = { host: "h1", pool: "local-h1", phase: "Ready" } as const;

describe("decideSnapshotBinding", () => {
  it("binds to the volume's host, with its zone and type (DATADISK when unset)", () => {
    const decision = decideSnapshotBinding(snapshot(), volume(onH1), NOW);
    expect(decision).toMatchObject({
      action: "write",
      bind: true,
      status: { host: "h1", zone: "z1", volumeType: "DATADISK" },
    });
    if (decision.action !== "write") throw new Error("no write");
    expect(decision.status.conditions).toEqual([
      expect.objectContaining({ type: "Bound", status: "True", reason: "Bound", observedGeneration: 1 }),
    ]);
    expect(decideSnapshotBinding(snapshot(), volume(onH1, "ROOT"), NOW)).toMatchObject({
      status: { volumeType: "ROOT" },
    });
  });

  it.each([
    ["VolumeNotFound", undefined],
    ["NoDiskYet", volume()],
    ["NoDiskYet", volume({ host: "h1" })],
    ["VolumeMoving", volume({ ...onH1, transfer: { target: { pool: "local-h2", host: "h2" } } })],
    ["VolumeDeleting", volume(onH1, undefined, true)],
  ])("does not bind: %s", (reason, v) => {
    const decision = decideSnapshotBinding(snapshot(), v, NOW);
    expect(decision).toMatchObject({ action: "write", bind: false });
    if (decision.action !== "write") throw new Error("no write");
    expect(decision.status.host).toBeUndefined();
    expect(decision.status.conditions).toEqual([
      expect.objectContaining({ type: "Bound", status: "False", reason }),
    ]);
  });

  it("writes a reason it already says only once", () => {
    const first = decideSnapshotBinding(snapshot(), undefined, NOW);
    if (first.action !== "write") throw new Error("no write");
    expect(decideSnapshotBinding(snapshot({ conditions: first.status.conditions }), undefined, NOW)).toEqual({
      action: "none",
    });
  });

  it("never binds again once bound, even when the volume moved on", () => {
    const bound = snapshot({ host: "h1", zone: "z1", volumeType: "DATADISK" });
    expect(decideSnapshotBinding(bound, volume({ host: "h2", pool: "local-h2" }), NOW)).toEqual({
      action: "none",
    });
    expect(decideSnapshotBinding(bound, undefined, NOW)).toEqual({ action: "none" });
  });

  it("releases a deleted snapshot no host took; a bound one is its agent's to release", () => {
    expect(decideSnapshotBinding(snapshot(undefined, true), volume(onH1), NOW)).toEqual({
      action: "release",
    });
    expect(decideSnapshotBinding(snapshot({ host: "h1" }, true), volume(onH1), NOW)).toEqual({
      action: "none",
    });
  });
});

import { describe, expect, it } from "vitest";
import type { Host, StoragePool, VirtualMachine, Volume } from "../../crds/index.ts";
import type { PoolUsage } from "../../crds/volume-placement.ts";
import type { Condition } from "../../runtime/conditions.ts";
import {
  decideVolumeStatus,
  NO_TARGET_RETRY_MS,
  type TransferInput,
  transferTarget,
} from "./transfer-target.ts";

const GI = 1024n ** 3n;
const NOW = new Date("2026-01-01T00:00:00Z");

const host = (name: string, capacity = "100Gi"): Host => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Host",
  metadata: { name },
  spec: { zone: "z1" },
  status: { storagePools: [{ name: `local-${name}`, ready: true, capacity }] },
});
const local = (h: string): StoragePool => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "StoragePool",
  metadata: { name: `local-${h}` },
  spec: { zone: "z1", type: "local", host: h },
});
const usage = (p: StoragePool, allocatedGi = 0n): PoolUsage => ({
  pool: p,
  allocatedBytes: allocatedGi * GI,
});

const volume = (status: NonNullable<Volume["status"]>): Volume => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Volume",
  metadata: { name: "web-root", namespace: "a", generation: 1 },
  spec: { zone: "z1", type: "ROOT", size: "10Gi" },
  status,
});
const vm = (status: NonNullable<VirtualMachine["status"]>, deleting = false): VirtualMachine => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "VirtualMachine",
  metadata: {
    name: "web",
    namespace: "a",
    ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}),
  },
  spec: { zone: "z1", serviceOffering: "small", template: "tiny" },
  status,
});

const onH1 = { pool: "local-h1", host: "h1", phase: "Ready" } as const;
const evacuatedToH2 = vm({ host: "h2", evacuatedFrom: "h1" });

function input(overrides: Partial<TransferInput> = {}): TransferInput {
  return {
    volume: volume(onH1),
    need: { volume: "web-root", sizeBytes: 10n * GI, tags: [] },
    user: evacuatedToH2,
    host: host("h2"),
    pools: [usage(local("h1")), usage(local("h2"))],
    now: NOW,
    ...overrides,
  };
}

describe("transferTarget", () => {
  const cases: [string, Partial<TransferInput>, ReturnType<typeof transferTarget>][] = [
    [
      "the VM went to a host that cannot reach the disk: move it there",
      {},
      { target: { pool: "local-h2", host: "h2" } },
    ],
    ["the VM is on the disk's host: nothing moves", { user: vm({ host: "h1" }) }, {}],
    ["the VM has no host yet: nothing moves", { user: vm({}) }, {}],
    ["no VM uses the volume: nothing moves", { user: undefined }, {}],
    ["the VM is being deleted: nothing moves", { user: vm({ host: "h2" }, true) }, {}],
    ["no disk yet: the new host's agent makes it", { volume: volume({}) }, {}],
    ["the host is not in the cache: wait", { host: undefined }, {}],
    [
      "a shared pool the new host reaches: nothing moves",
      {
        volume: volume({ pool: "shared", host: "h1" }),
        pools: [
          usage({
            ...local("h1"),
            metadata: { name: "shared" },
            spec: { zone: "z1", type: "nfs", path: "/mnt" },
          }),
        ],
      },
      {},
    ],
    [
      "no room on the new host: says why, no target",
      { pools: [usage(local("h1")), usage(local("h2"), 95n)] },
      { problem: "volume web-root cannot move from pool local-h1: pool local-h2 has too little room" },
    ],
    [
      "a move under way keeps its target, whatever the room now",
      {
        volume: volume({ ...onH1, transfer: { target: { pool: "local-h2", host: "h2" } } }),
        pools: [usage(local("h1")), usage(local("h2"), 99n)],
      },
      { target: { pool: "local-h2", host: "h2" } },
    ],
    [
      "a move under way finishes even when the VM is deleted",
      {
        volume: volume({ ...onH1, transfer: { target: { pool: "local-h2", host: "h2" } } }),
        user: undefined,
      },
      { target: { pool: "local-h2", host: "h2" } },
    ],
    [
      "the VM went on to a third host: the target follows it",
      {
        volume: volume({ ...onH1, transfer: { target: { pool: "local-h2", host: "h2" } } }),
        user: vm({ host: "h3" }),
        host: host("h3"),
        pools: [usage(local("h1")), usage(local("h2")), usage(local("h3"))],
      },
      { target: { pool: "local-h3", host: "h3" } },
    ],
    [
      "the move is done: the target goes",
      {
        volume: volume({
          pool: "local-h2",
          host: "h2",
          transfer: { target: { pool: "local-h2", host: "h2" } },
        }),
      },
      {},
    ],
  ];
  it.each(cases)("%s", (_, overrides, expected) => {
    expect(transferTarget(input(overrides))).toEqual(expected);
  });
});

describe("decideVolumeStatus", () => {
  const moved = (d: ReturnType<typeof decideVolumeStatus>) =>
    d.status.conditions.find((c) => c.type === "Moved");

  it("writes the target with a Moving condition, once", () => {
    const first = decideVolumeStatus(input());
    expect(first).toMatchObject({
      write: true,
      status: { transfer: { target: { pool: "local-h2", host: "h2" } } },
    });
    expect(moved(first)).toMatchObject({ status: "False", reason: "Moving" });
    const written = volume({ ...onH1, ...first.status });
    expect(decideVolumeStatus(input({ volume: written })).write).toBe(false);
  });

  it("drops the target and the condition when the disk arrived", () => {
    const during = decideVolumeStatus(input());
    const arrived = volume({ ...during.status, pool: "local-h2", host: "h2" });
    const done = decideVolumeStatus(input({ volume: arrived }));
    expect(done).toMatchObject({ write: true, status: { conditions: [] } });
    expect(done.status.transfer).toBeUndefined();
  });

  it("says why nothing fits and looks again later", () => {
    const stuck = decideVolumeStatus(input({ pools: [usage(local("h1")), usage(local("h2"), 95n)] }));
    expect(stuck.requeueAfterMs).toBe(NO_TARGET_RETRY_MS);
    expect(stuck.status.transfer).toBeUndefined();
    expect(moved(stuck)).toMatchObject({ status: "False", reason: "NoTargetPool" });
  });

  it("keeps the InUse guard of a data volume beside the move, and writes nothing when nothing changed", () => {
    const inUse = { type: "InUse", status: "True", reason: "Attached", message: "Used by VM web." } as const;
    const first = decideVolumeStatus(input({ user: vm({ host: "h1" }), inUse }));
    expect(first.write).toBe(true);
    expect(first.status.conditions.map((c) => c.type)).toEqual(["InUse"]);
    const written = volume({ ...onH1, conditions: first.status.conditions as Condition[] });
    expect(decideVolumeStatus(input({ volume: written, user: vm({ host: "h1" }), inUse })).write).toBe(false);
  });
});

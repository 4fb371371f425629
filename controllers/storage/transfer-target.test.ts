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
const shared = (name: string): StoragePool => ({
  ...local("h1"),
  metadata: { name },
  spec: { zone: "z1", type: "sharedMountPoint", path: `/mnt/${name}` },
});
/** A volume asking for `pool` (spec.pool), its disk where `status` says. */
const asking = (pool: string, status: NonNullable<Volume["status"]> = onH1): Volume => ({
  ...volume(status),
  spec: { zone: "z1", type: "ROOT", size: "10Gi", pool },
});
const hostWithPools = (name: string, pools: string[]): Host => ({
  ...host(name),
  status: { storagePools: pools.map((p) => ({ name: p, ready: true, capacity: "100Gi" })) },
});
const evacuatedToH2 = vm({ host: "h2", evacuatedFrom: "h1" });

function input(overrides: Partial<TransferInput> = {}): TransferInput {
  return {
    volume: volume(onH1),
    need: { volume: "web-root", sizeBytes: 10n * GI, tags: [] },
    user: evacuatedToH2,
    host: host("h2"),
    hostNamed: (name) => (name.startsWith("h") ? host(name) : undefined),
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
      "a copy announced at the target is finished first, even when the VM went on to a third host",
      {
        volume: volume({
          ...onH1,
          transfer: {
            target: { pool: "local-h2", host: "h2" },
            received: { pool: "local-h2", host: "h2", path: "/p/d", sha256: "a".repeat(64), pending: true },
          },
        }),
        user: vm({ host: "h3" }),
        host: host("h3"),
        pools: [usage(local("h1")), usage(local("h2")), usage(local("h3"))],
      },
      { target: { pool: "local-h2", host: "h2" } },
    ],
    [
      "asked for another host's local pool, no VM: that host copies it in",
      { volume: asking("local-h2"), user: undefined },
      { target: { pool: "local-h2", host: "h2" } },
    ],
    [
      "asked for a shared pool, the VM stopped on the disk's host: that host copies it in",
      {
        volume: asking("fast"),
        user: vm({ host: "h1" }),
        host: hostWithPools("h1", ["local-h1", "fast"]),
        hostNamed: (name) => hostWithPools(name, [`local-${name}`, "fast"]),
        pools: [usage(local("h1")), usage(shared("fast"))],
      },
      { target: { pool: "fast", host: "h1" } },
    ],
    [
      "asked for another host's local pool while the VM is on this host: refused, the disk stays",
      { volume: asking("local-h2"), user: vm({ host: "h1" }), host: host("h1") },
      {
        problem:
          "volume web-root: pool local-h2 is local to host h2, but its VM is on host h1; move the VM with its volumes instead",
      },
    ],
    [
      "asked for a pool that does not exist",
      { volume: asking("nowhere"), user: undefined },
      { problem: "volume web-root: pool nowhere does not exist in zone z1" },
    ],
    [
      "asked for a full pool: says why",
      { volume: asking("local-h2"), user: undefined, pools: [usage(local("h1")), usage(local("h2"), 95n)] },
      { problem: "volume web-root: pool local-h2 has too little room" },
    ],
    [
      "asked for the pool it is in: nothing moves",
      { volume: asking("local-h1"), user: vm({ host: "h1" }), host: host("h1") },
      {},
    ],
    [
      "the VM follows to a host: the requested pool when it fits there",
      {
        volume: asking("fast"),
        host: hostWithPools("h2", ["local-h2", "fast"]),
        hostNamed: (name) => hostWithPools(name, [`local-${name}`, "fast"]),
        pools: [usage(local("h1")), usage(local("h2")), usage(shared("fast"), 0n)],
      },
      { target: { pool: "fast", host: "h2" } },
    ],
    [
      "a request for another pool replaces a move whose copy has not begun",
      {
        volume: asking("local-h2", { ...onH1, transfer: { target: { pool: "fast", host: "h1" } } }),
        user: undefined,
      },
      { target: { pool: "local-h2", host: "h2" } },
    ],
    [
      "asked back into the pool it is in before the copy began: the move is called off",
      {
        volume: asking("local-h1", { ...onH1, transfer: { target: { pool: "local-h2", host: "h2" } } }),
        user: undefined,
      },
      {},
    ],
    [
      "asked back once the copy began: the move finishes first",
      {
        volume: asking("local-h1", {
          ...onH1,
          transfer: {
            target: { pool: "local-h2", host: "h2" },
            received: { pool: "local-h2", host: "h2", path: "/p/d", sha256: "a".repeat(64), pending: true },
          },
        }),
        user: undefined,
      },
      { target: { pool: "local-h2", host: "h2" } },
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

  it("changes or drops a target only on the version it decided from", () => {
    expect(decideVolumeStatus(input()).guarded).toBe(false);
    const moving = volume({ ...onH1, transfer: { target: { pool: "local-h2", host: "h2" } } });
    const third = { user: vm({ host: "h3" }), host: host("h3") };
    const pools = [usage(local("h1")), usage(local("h2")), usage(local("h3"))];
    expect(decideVolumeStatus(input({ volume: moving, ...third, pools })).guarded).toBe(true);
    expect(decideVolumeStatus(input({ volume: moving })).guarded).toBe(false);
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

  describe("a disk in a shared pool whose VM went to another host", () => {
    const onShared = { pool: "nfs-1", host: "h1", phase: "Attached" } as const;
    const pools = [usage(local("h1")), usage(local("h2")), usage(shared("nfs-1"))];
    const toH2 = { user: vm({ host: "h2" }), host: hostWithPools("h2", ["local-h2", "nfs-1"]), pools };

    it("is released to the VM's new host, which takes it without a copy", () => {
      const released = decideVolumeStatus(input({ volume: volume(onShared), ...toH2 }));
      expect(released).toMatchObject({ write: true, status: { releasedTo: "h2" } });
      expect(released.status.transfer).toBeUndefined();
      const written = volume({ ...onShared, releasedTo: "h2" });
      expect(decideVolumeStatus(input({ volume: written, ...toH2 })).write).toBe(false);
    });

    it("keeps the release once taken, with no write", () => {
      const taken = volume({ ...onShared, host: "h2", releasedTo: "h2" });
      expect(decideVolumeStatus(input({ volume: taken, ...toH2 }))).toMatchObject({
        write: false,
        status: { releasedTo: "h2" },
      });
    });

    it("withdraws a release the VM left before it was taken", () => {
      const stale = volume({ ...onShared, releasedTo: "h2" });
      const back = decideVolumeStatus(input({ volume: stale, ...toH2, user: vm({ host: "h1" }) }));
      expect(back.write).toBe(true);
      expect(back.status.releasedTo).toBeUndefined();
    });

    it("releases nothing for a VM being deleted, nor a disk that must be copied", () => {
      const deleting = { ...toH2, user: vm({ host: "h2" }, true) };
      expect(decideVolumeStatus(input({ volume: volume(onShared), ...deleting })).status.releasedTo).toBe(
        undefined,
      );
      const copied = decideVolumeStatus(input());
      expect(copied.status).toMatchObject({ transfer: { target: { host: "h2" } } });
      expect(copied.status.releasedTo).toBeUndefined();
    });
  });
});

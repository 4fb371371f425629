import { describe, expect, it } from "vitest";
import type { Host, StoragePool, Volume } from "./index.ts";
import {
  choosePools,
  localPoolHosts,
  type PoolUsage,
  poolAllocations,
  reaches,
  unreachableVolume,
  type VolumeNeed,
  volumeNeed,
} from "./volume-placement.ts";

const GI = 1024n ** 3n;

type PoolReport = NonNullable<NonNullable<Host["status"]>["storagePools"]>[number];

const host = (name: string, reports: PoolReport[] = [], zone = "z1"): Host => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Host",
  metadata: { name },
  spec: { zone },
  status: { storagePools: reports },
});
const ready = (name: string, capacity = "100Gi"): PoolReport => ({ name, ready: true, capacity });

const pool = (name: string, spec: Partial<StoragePool["spec"]> = {}): StoragePool => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "StoragePool",
  metadata: { name },
  spec: { zone: "z1", type: "sharedMountPoint", path: "/mnt/shared", ...spec },
});
const local = (hostName: string, spec: Partial<StoragePool["spec"]> = {}) =>
  pool(`local-${hostName}`, { type: "local", host: hostName, ...spec });
const usage = (p: StoragePool, allocatedGi = 0n): PoolUsage => ({
  pool: p,
  allocatedBytes: allocatedGi * GI,
});
const need = (volume: string, sizeGi: bigint, extra: Partial<VolumeNeed> = {}): VolumeNeed => ({
  volume,
  sizeBytes: sizeGi * GI,
  tags: [],
  ...extra,
});

describe("reaches", () => {
  it("is the zone's shared pools and the host's own local pool", () => {
    const h1 = host("h1");
    expect(reaches(pool("shared"), h1)).toBe(true);
    expect(reaches(pool("other-zone", { zone: "z2" }), h1)).toBe(false);
    expect(reaches(local("h1"), h1)).toBe(true);
    expect(reaches(local("h2"), h1)).toBe(false);
  });
});

describe("choosePools", () => {
  const h2 = host("h2", [ready("local-h2", "20Gi"), ready("shared", "50Gi")]);

  it("keeps a disk where it is when the host reaches its pool, even a full one", () => {
    const result = choosePools([need("root", 30n, { pool: "shared" })], h2, [usage(pool("shared"), 50n)]);
    expect(result).toEqual({ choices: new Map([["root", { pool: "shared", moves: false }]]) });
  });

  it("puts a new disk in a shared pool before a local one, and a moving disk where the host reaches", () => {
    const pools = [usage(local("h2")), usage(pool("shared")), usage(local("h1"))];
    const result = choosePools([need("root", 5n), need("data", 5n, { pool: "local-h1" })], h2, pools);
    expect(result).toEqual({
      choices: new Map([
        ["root", { pool: "shared", moves: false }],
        ["data", { pool: "shared", moves: true }],
      ]),
    });
  });

  it("follows the offering's storage type and tags", () => {
    const pools = [usage(local("h2", { tags: ["ssd"] })), usage(pool("shared"))];
    const chosen = (n: VolumeNeed) => {
      const result = choosePools([n], h2, pools);
      return "choices" in result ? result.choices.get(n.volume)?.pool : result.reason;
    };
    expect(chosen(need("v", 1n, { storageType: "local" }))).toBe("local-h2");
    expect(chosen(need("v", 1n, { tags: ["ssd"] }))).toBe("local-h2");
    expect(chosen(need("v", 1n, { storageType: "shared", tags: ["ssd"] }))).toBe(
      "volume v: pool local-h2 is local, the offering asks for shared; pool shared lacks storage tags ssd",
    );
  });

  it("counts the room the earlier volumes of the same VM take", () => {
    const pools = [usage(local("h2"), 5n)];
    const result = choosePools([need("a", 10n), need("b", 10n)], h2, pools);
    expect(result).toEqual({ reason: "volume b: pool local-h2 has too little room" });
    expect(choosePools([need("a", 10n), need("b", 5n)], h2, pools)).toHaveProperty("choices");
  });

  it("says why a disk cannot move: no room, maintenance, not ready on the host, not reached", () => {
    const moving = [need("data", 10n, { pool: "local-h1" })];
    expect(choosePools(moving, h2, [usage(local("h1")), usage(local("h2"), 15n)])).toEqual({
      reason: "volume data cannot move from pool local-h1: pool local-h2 has too little room",
    });
    expect(choosePools(moving, h2, [usage(local("h2", { maintenance: true }))])).toEqual({
      reason: "volume data cannot move from pool local-h1: pool local-h2 is in maintenance",
    });
    expect(
      choosePools(moving, host("h2", [{ name: "local-h2", ready: false }]), [usage(local("h2"))]),
    ).toEqual({
      reason: "volume data cannot move from pool local-h1: pool local-h2 is not ready on host h2",
    });
    expect(choosePools(moving, h2, [usage(local("h1"))])).toEqual({
      reason: "volume data cannot move from pool local-h1: no storage pool in zone z1 reaches it",
    });
  });

  it("prefers the pool with the most room among equals", () => {
    const h = host("h3", [ready("a", "50Gi"), ready("b", "50Gi")]);
    const result = choosePools([need("v", 1n)], h, [usage(pool("a"), 30n), usage(pool("b"), 10n)]);
    expect("choices" in result && result.choices.get("v")?.pool).toBe("b");
  });
});

describe("unreachableVolume", () => {
  it("finds the first placed disk the host cannot reach, or whose pool is unknown", () => {
    const pools = [local("h1"), pool("shared")];
    const h2 = host("h2");
    expect(
      unreachableVolume([need("new", 1n), need("s", 1n, { pool: "shared" })], h2, pools),
    ).toBeUndefined();
    expect(unreachableVolume([need("d", 1n, { pool: "local-h1" })], h2, pools)?.volume).toBe("d");
    expect(unreachableVolume([need("g", 1n, { pool: "gone" })], h2, pools)?.volume).toBe("g");
  });
});

describe("localPoolHosts", () => {
  it("pins local disks to their host; shared and new disks pin nowhere", () => {
    const pools = [local("h1"), pool("shared")];
    const needs = [need("a", 1n, { pool: "local-h1" }), need("b", 1n, { pool: "shared" }), need("c", 1n)];
    expect(localPoolHosts(needs, pools)).toEqual([{ volume: "a", host: "h1" }]);
  });
});

describe("volumeNeed and poolAllocations", () => {
  const volume = (name: string, spec: Partial<Volume["spec"]>, status?: Volume["status"]): Volume => ({
    apiVersion: "stratus.io/v1alpha1",
    kind: "Volume",
    metadata: { name, namespace: "a" },
    spec: { zone: "z1", ...spec },
    ...(status ? { status } : {}),
  });

  it("takes the size from the disk, the spec or the offering, and the ROOT's tags from the service offering", () => {
    const service = { spec: { cpu: 1, memory: "1Gi", storageType: "local", storageTags: ["ssd"] } } as never;
    const disk = { spec: { size: "8Gi", tags: ["fast"] } } as never;
    expect(volumeNeed(volume("r", { type: "ROOT", size: "2Gi" }), { service, disk })).toEqual({
      volume: "r",
      sizeBytes: 2n * GI,
      storageType: "local",
      tags: ["ssd", "fast"],
    });
    expect(
      volumeNeed(volume("d", { diskOffering: "x" }, { pool: "p", capacity: "3Gi" }), { service, disk }),
    ).toEqual({
      volume: "d",
      sizeBytes: 3n * GI,
      tags: ["fast"],
      pool: "p",
    });
  });

  it("counts a moving disk in both its pool and its target", () => {
    const volumes = [
      volume("a", { size: "1Gi" }, { pool: "p" }),
      volume("b", { size: "2Gi" }, { pool: "p", transfer: { target: { pool: "q", host: "h2" } } }),
      volume("c", { size: "4Gi" }),
    ];
    const sizes = poolAllocations(volumes, (v) => volumeNeed(v, {}).sizeBytes);
    expect(sizes).toEqual(
      new Map([
        ["p", 3n * GI],
        ["q", 2n * GI],
      ]),
    );
  });
});

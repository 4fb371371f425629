import pino from "pino";
import { describe, expect, it } from "vitest";
import type { Volume } from "../crds/index.ts";
import { FakeFiles, FakeHypervisor } from "./fake-hypervisor.ts";
import { CLUSTER, dataVolume } from "./testing/fixtures.ts";
import { MemoryWrites } from "./testing/memory-writes.ts";
import { syncVolumeDeletion } from "./volume-sync.ts";
import {
  discardIncomingCopy,
  stagingPath,
  syncVolumeTransfer,
  type TransferContext,
} from "./volume-transfer.ts";

const log = pino({ level: "silent" });
const SECONDARY = "/secondary";

/** Two hosts with local pools of their own and one secondary storage both mount. */
function twoHosts() {
  const files = new FakeFiles();
  const h1 = new FakeHypervisor({ cluster: CLUSTER, host: "h1" }, "/h1/pool", files);
  const h2 = new FakeHypervisor({ cluster: CLUSTER, host: "h2" }, "/h2/pool", files);
  const writes = new MemoryWrites(new Map());
  const context = (host: string, hypervisor: FakeHypervisor): TransferContext => ({
    host,
    hypervisor,
    storage: {
      pathOf: (pool) => hypervisor.pools.get(pool)?.path,
      typeOf: () => "local",
    },
    writes,
    secondaryPath: () => SECONDARY,
    log,
  });
  return { files, h1, h2, writes, on1: context("h1", h1), on2: context("h2", h2) };
}

/** The volume d1 whose disk is in h1's local pool and holds `pattern`, asked to move to h2. */
async function movingVolume(rig: ReturnType<typeof twoHosts>, pattern: string): Promise<Volume> {
  const disk = await rig.h1.ensureDisk({
    pool: "local-h1",
    name: "data-vol-d1",
    capacityBytes: 2n ** 30n,
    what: "d1",
    grow: false,
  });
  rig.h1.write(disk.path, pattern);
  return dataVolume(
    "d1",
    {},
    {
      phase: "Ready",
      host: "h1",
      pool: "local-h1",
      poolType: "local",
      path: disk.path,
      capacity: "1Gi",
      transfer: { target: { pool: "local-h2", host: "h2" } },
    },
  );
}

/** The Volume after the last transfer apply, as the API server would show it. */
function withTransfer(volume: Volume, transfer: Record<string, unknown>): Volume {
  const target = volume.status?.transfer?.target;
  return {
    ...volume,
    status: { ...volume.status, transfer: { ...(target ? { target } : {}), ...transfer } },
  } as Volume;
}

describe("a volume moving between two hosts' local pools", () => {
  it("is staged, copied in and verified, and only then deleted at its old place; the bytes arrive unchanged", async () => {
    const rig = twoHosts();
    let volume = await movingVolume(rig, "pattern-0123456789");

    // The target has nothing to copy yet; the holder stages the stopped disk.
    await syncVolumeTransfer(volume, rig.on2);
    expect(rig.writes.writes).toEqual([]);
    await syncVolumeTransfer(volume, rig.on1);
    const exported = rig.writes.transfers.get("team-a/d1")?.exported as { path: string; sha256: string };
    expect(exported.path).toBe(stagingPath(SECONDARY, volume));
    expect(rig.files.files.get(exported.path)?.content).toBe("pattern-0123456789");
    volume = withTransfer(volume, { exported });

    // The holder waits for the copy; the target makes it and proves it.
    await syncVolumeTransfer(volume, rig.on1);
    expect(rig.h1.disks.has("data-vol-d1")).toBe(true);
    await syncVolumeTransfer(volume, rig.on2);
    const received = rig.writes.transfers.get("team-a/d1")?.received as { path: string; host: string };
    expect(received).toMatchObject({
      pool: "local-h2",
      host: "h2",
      path: "/h2/pool/data-vol-d1",
      sha256: exported.sha256,
    });
    // Both copies exist until the holder sees the proof.
    expect(rig.h1.content("/h1/pool/data-vol-d1")).toBe("pattern-0123456789");
    expect(rig.h2.content("/h2/pool/data-vol-d1")).toBe("pattern-0123456789");
    volume = withTransfer(volume, { exported, received });

    await syncVolumeTransfer(volume, rig.on1);
    expect(rig.h1.disks.has("data-vol-d1")).toBe(false);
    expect(rig.files.files.has(exported.path)).toBe(false);
    expect(rig.writes.volumeStatuses.get("team-a/d1")).toMatchObject({
      host: "h2",
      pool: "local-h2",
      path: "/h2/pool/data-vol-d1",
      phase: "Ready",
    });
    expect(rig.writes.events.map((e) => e.reason)).toContain("VolumeMoved");
    // The old holder writes nothing more on a volume no longer its own; the new holder clears the steps.
    expect(rig.writes.transfers.get("team-a/d1")).toEqual({ exported, received });
    const handedOver = rig.writes.volumeStatuses.get("team-a/d1") as Volume["status"];
    await syncVolumeTransfer({ ...volume, status: { ...volume.status, ...handedOver } }, rig.on2);
    expect(rig.writes.transfers.get("team-a/d1")).toEqual({});
  });

  it("decides on the Volume as the API server has it: a cache behind its own staging neither stages again nor drops the copy's proof", async () => {
    const rig = twoHosts();
    const stale = await movingVolume(rig, "once");
    await syncVolumeTransfer(stale, rig.on1);
    const exported = rig.writes.transfers.get("team-a/d1")?.exported as Record<string, unknown>;
    // Meanwhile the target announced its copy and proved it; the holder's cache still shows neither.
    await syncVolumeTransfer(withTransfer(stale, { exported }), rig.on2);
    const received = rig.writes.transfers.get("team-a/d1")?.received as Record<string, unknown>;
    const onServer = withTransfer(stale, { exported, received });
    const writes = rig.writes.writes.length;
    await syncVolumeTransfer(stale, { ...rig.on1, fresh: async () => onServer });
    // Not staged again (that apply would have dropped `received`): handed over on the proof instead.
    expect(rig.writes.transfers.get("team-a/d1")).toEqual({ exported, received });
    expect(rig.writes.writes.slice(writes)).toEqual(["volume team-a/d1"]);
    expect(rig.writes.volumeStatuses.get("team-a/d1")).toMatchObject({ host: "h2", pool: "local-h2" });
    expect(rig.h2.content("/h2/pool/data-vol-d1")).toBe("once");
  });

  it("keeps the old disk and writes no proof when the copy does not hash right", async () => {
    const rig = twoHosts();
    let volume = await movingVolume(rig, "precious");
    await syncVolumeTransfer(volume, rig.on1);
    const exported = rig.writes.transfers.get("team-a/d1")?.exported as Record<string, unknown>;
    volume = withTransfer(volume, { exported });
    rig.h2.settings.corruptNextImport = true;
    expect(await syncVolumeTransfer(volume, rig.on2)).toEqual({ requeueAfterMs: 15_000 });
    // Only the announcement of the copy, no proof.
    const announced = rig.writes.transfers.get("team-a/d1")?.received as Record<string, unknown>;
    expect(announced).toMatchObject({ host: "h2", pool: "local-h2", pending: true });
    volume = withTransfer(volume, { exported, received: announced });
    expect(rig.writes.events.map((e) => e.reason)).toContain("ChecksumMismatch");
    expect(rig.h2.disks.has("data-vol-d1")).toBe(false);
    // The holder, without a proof, keeps its disk whatever happens.
    await syncVolumeTransfer(volume, rig.on1);
    expect(rig.h1.content("/h1/pool/data-vol-d1")).toBe("precious");
    // The next try succeeds.
    await syncVolumeTransfer(volume, rig.on2);
    expect(rig.h2.content("/h2/pool/data-vol-d1")).toBe("precious");
  });

  it("never stages a disk a running domain here still holds, nor a proof for another target", async () => {
    const rig = twoHosts();
    let volume = await movingVolume(rig, "live");
    await rig.h1.define({
      vm: { namespace: "team-a", name: "vm", uid: "vm-1" },
      type: "test",
      vcpus: 1,
      memoryBytes: 2n ** 28n,
      disks: [{ path: "/h1/pool/data-vol-d1", format: "qcow2", serial: "d1" }],
      consoleSocket: "/c.sock",
      nics: [],
    });
    await rig.h1.start("vm-1");
    expect(await syncVolumeTransfer(volume, rig.on1)).toEqual({ requeueAfterMs: 5_000 });
    expect(rig.writes.writes).toEqual([]);
    await rig.h1.powerOff("vm-1");
    await syncVolumeTransfer(volume, rig.on1);
    const exported = rig.writes.transfers.get("team-a/d1")?.exported as { sha256: string };
    // A proof from a host that is no longer the target (the target changed meanwhile) is ignored.
    volume = withTransfer(volume, {
      exported,
      received: { pool: "local-h3", host: "h3", path: "/h3/pool/data-vol-d1", sha256: exported.sha256 },
    });
    await syncVolumeTransfer(volume, rig.on1);
    expect(rig.h1.disks.has("data-vol-d1")).toBe(true);
    expect(rig.writes.volumeStatuses.size).toBe(0);
  });

  it("announces its copy on the version naming it the target before it copies a byte", async () => {
    const rig = twoHosts();
    let volume = await movingVolume(rig, "announced");
    volume.metadata.resourceVersion = "41";
    await syncVolumeTransfer(volume, rig.on1);
    const exported = rig.writes.transfers.get("team-a/d1")?.exported as Record<string, unknown>;
    volume = withTransfer(volume, { exported });
    let copiedBeforeAnnounce = true;
    const writeTransfer = rig.writes.volumeTransfer.bind(rig.writes);
    rig.writes.volumeTransfer = async (ref, transfer, onVersion) => {
      if (onVersion) copiedBeforeAnnounce = rig.h2.disks.has("data-vol-d1");
      await writeTransfer(ref, transfer, onVersion);
    };
    await syncVolumeTransfer(volume, rig.on2);
    expect(copiedBeforeAnnounce).toBe(false);
    expect(rig.writes.writes.filter((w) => w.startsWith("transfer"))).toHaveLength(3);
    // The last write is the proof (no precondition needed: the target cannot change any more).
    expect(rig.writes.transfers.get("team-a/d1")?.received).not.toHaveProperty("pending");
  });

  it("moves a disk between two pools of one host: copied, verified, then the old one goes", async () => {
    const rig = twoHosts();
    await rig.h1.preparePool({ name: "fast", type: "sharedMountPoint", path: "/mnt/fast" });
    let volume = await movingVolume(rig, "same-host");
    volume = { ...volume, status: { ...volume.status, transfer: { target: { pool: "fast", host: "h1" } } } };
    await syncVolumeTransfer(volume, rig.on1);
    const exported = rig.writes.transfers.get("team-a/d1")?.exported as Record<string, unknown>;
    volume = withTransfer(volume, { exported });
    await syncVolumeTransfer(volume, rig.on1);
    const received = rig.writes.transfers.get("team-a/d1")?.received as Record<string, unknown>;
    expect(received).toMatchObject({ pool: "fast", host: "h1", path: "/mnt/fast/data-vol-d1" });
    volume = withTransfer(volume, { exported, received });
    await syncVolumeTransfer(volume, rig.on1);
    expect(rig.files.files.has("/h1/pool/data-vol-d1")).toBe(false);
    expect(rig.h1.content("/mnt/fast/data-vol-d1")).toBe("same-host");
    expect(rig.writes.volumeStatuses.get("team-a/d1")).toMatchObject({ host: "h1", pool: "fast" });
  });

  it("a volume deleted mid-move leaves no copy: the target removes its copy, then the holder its disk", async () => {
    const rig = twoHosts();
    let volume = await movingVolume(rig, "doomed");
    await syncVolumeTransfer(volume, rig.on1);
    const exported = rig.writes.transfers.get("team-a/d1")?.exported as { path: string };
    volume = withTransfer(volume, { exported });
    await syncVolumeTransfer(volume, rig.on2);
    const received = rig.writes.transfers.get("team-a/d1")?.received as Record<string, unknown>;
    volume = withTransfer(volume, { exported, received });
    volume.metadata = {
      ...volume.metadata,
      deletionTimestamp: "2026-01-01T00:00:00Z",
      finalizers: ["stratus.io/disk"],
    };
    const deletion = (hypervisor: FakeHypervisor, host: string) => ({
      host,
      hypervisor,
      writes: rig.writes,
      boundVms: () => [],
      log,
    });
    // The holder waits: the copy at h2 is on record and only h2 can remove it.
    expect(await syncVolumeDeletion(volume, deletion(rig.h1, "h1"))).toEqual({ requeueAfterMs: 10_000 });
    expect(rig.h1.disks.has("data-vol-d1")).toBe(true);
    await discardIncomingCopy(volume, rig.on2);
    expect(rig.h2.disks.has("data-vol-d1")).toBe(false);
    expect(rig.writes.transfers.get("team-a/d1")).toEqual({ exported });
    volume = withTransfer(volume, { exported });
    await syncVolumeDeletion(volume, deletion(rig.h1, "h1"));
    expect(rig.h1.disks.has("data-vol-d1")).toBe(false);
    expect(rig.files.files.has(exported.path)).toBe(false);
    expect(rig.writes.writes).toContain("finalizer volumes/team-a/d1");
  });

  it("says why when the zone has no secondary storage, and copies nothing", async () => {
    const rig = twoHosts();
    const volume = await movingVolume(rig, "stuck");
    const result = await syncVolumeTransfer(volume, { ...rig.on1, secondaryPath: () => undefined });
    expect(result).toEqual({ requeueAfterMs: 30_000 });
    expect(rig.writes.events[0]).toMatchObject({ type: "Warning", reason: "NoSecondaryStorage" });
    expect(rig.h1.content("/h1/pool/data-vol-d1")).toBe("stuck");
  });
});

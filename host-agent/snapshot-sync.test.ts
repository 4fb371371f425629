import { createHash } from "node:crypto";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { SNAPSHOT_DATA_FINALIZER } from "../crds/finalizers.ts";
import { REVERT_ANNOTATION, type Volume, type VolumeSnapshot } from "../crds/index.ts";
import { FakeHypervisor } from "./fake-hypervisor.ts";
import { HostProblem } from "./problem.ts";
import type { S3Config, SnapshotStore } from "./snapshot-store.ts";
import {
  NO_SNAPSHOT_STORE,
  type SnapshotContext,
  snapshotKey,
  snapshotPath,
  syncRevert,
  syncSnapshot,
} from "./snapshot-sync.ts";
import { dataVolume, hostStorage, LOCAL_POOL, OWNER } from "./testing/fixtures.ts";
import { MemoryWrites } from "./testing/memory-writes.ts";

const log = pino({ level: "silent" });

function snapshotOf(volume: string, status: VolumeSnapshot["status"] = { host: OWNER.host }): VolumeSnapshot {
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "VolumeSnapshot",
    metadata: {
      name: `${volume}-snap`,
      namespace: "team-a",
      uid: `snap-of-${volume}`,
      finalizers: [SNAPSHOT_DATA_FINALIZER],
    },
    spec: { volume },
    status,
  };
}

async function rig(content: string) {
  const hv = new FakeHypervisor(OWNER, "/pool");
  const writes = new MemoryWrites(new Map());
  const disk = await hv.ensureDisk({
    pool: LOCAL_POOL,
    name: "data-vol-d1",
    capacityBytes: 2n ** 30n,
    what: "d1",
    grow: false,
  });
  hv.write(disk.path, content);
  let volume: Volume = dataVolume(
    "d1",
    {},
    { host: OWNER.host, pool: LOCAL_POOL, path: disk.path, capacity: "1Gi" },
  );
  const snapshots = new Map<string, VolumeSnapshot>();
  const context: SnapshotContext = {
    host: OWNER.host,
    hypervisor: hv,
    storage: hostStorage("/pool"),
    writes,
    volume: async () => volume,
    snapshot: async (_ns, name) => snapshots.get(name),
    secondaryPath: () => "/secondary",
    ...NO_SNAPSHOT_STORE,
    pausedForCopy: new Set(),
    now: () => new Date("2026-11-30T08:00:00Z"),
    log,
  };
  /** The snapshot as the API server shows it after the agent's write. */
  const taken = (snapshot: VolumeSnapshot): VolumeSnapshot => {
    const result = {
      ...snapshot,
      status: { ...snapshot.status, ...writes.snapshotStatuses.get(`team-a/${snapshot.metadata.name}`) },
    } as VolumeSnapshot;
    snapshots.set(snapshot.metadata.name as string, result);
    return result;
  };
  return { hv, writes, context, disk, taken, setVolume: (v: Volume) => (volume = v), volume: () => volume };
}

/**
 * A store over the fake hypervisor's files: the unit tests prove what the agent does with a store;
 * the real one (S3SnapshotStore, the AWS SDK against MinIO) is proven in volume-snapshots.test.ts.
 */
class MemoryStore implements SnapshotStore {
  readonly objects = new Map<string, { capacityBytes: bigint; content: string }>();
  private readonly hv: FakeHypervisor;
  constructor(hv: FakeHypervisor) {
    this.hv = hv;
  }
  async upload(store: S3Config, key: string, file: string) {
    const staged = this.hv.files.files.get(file);
    if (!staged) throw new HostProblem("StagedCopyMissing", file);
    this.objects.set(key, { ...staged });
    return { endpoint: store.endpoint, bucket: store.bucket, key };
  }
  async download(object: { key: string }, file: string, sha256: string) {
    const held = this.objects.get(object.key);
    if (!held || createHash("sha256").update(held.content).digest("hex") !== sha256)
      throw new HostProblem("SnapshotChecksumMismatch", object.key);
    this.hv.files.files.set(file, { ...held });
  }
  async remove(object: { key: string }) {
    this.objects.delete(object.key);
  }
}

const S3 = { endpoint: "http://store.test:9000", bucket: "snaps" };

async function runningWith(hv: FakeHypervisor, path: string) {
  await hv.define({
    vm: { namespace: "team-a", name: "web", uid: "vm-1" },
    type: "test",
    vcpus: 1,
    memoryBytes: 2n ** 28n,
    disks: [{ path, format: "qcow2", serial: "data" }],
    consoleSocket: "/c.sock",
    nics: [],
  });
  await hv.start("vm-1");
}

describe("volume snapshots on the host holding the disk", () => {
  it("copies a running guest's disk while it is paused, resumes it, and records the file and its checksum", async () => {
    const r = await rig("before");
    await runningWith(r.hv, r.disk.path);
    const snapshot = snapshotOf("d1");
    await syncSnapshot(snapshot, r.context);
    expect(r.hv.calls.slice(-3)).toEqual(["pause vm-1", "export data-vol-d1", "resume vm-1"]);
    expect(r.hv.domains.get("vm-1")?.state).toBe("running");
    const status = r.writes.snapshotStatuses.get("team-a/d1-snap");
    const path = snapshotPath("/secondary", r.volume(), snapshot);
    expect(status).toMatchObject({
      phase: "Ready",
      path,
      virtualSize: "1Gi",
      takenAt: "2026-11-30T08:00:00.000Z",
    });
    expect(r.hv.content(path)).toBe("before");
    // Taken once: a second pass copies nothing.
    const calls = r.hv.calls.length;
    await syncSnapshot(r.taken(snapshot), r.context);
    expect(r.hv.calls).toHaveLength(calls);
  });

  it("reverts a stopped VM's disk to the snapshot, refuses while the guest runs, and fills a new volume from it", async () => {
    const r = await rig("original");
    const snapshot = r.taken(snapshotOf("d1"));
    await syncSnapshot(snapshot, r.context);
    r.taken(snapshot);
    r.hv.write(r.disk.path, "overwritten");
    const asked = {
      ...r.volume(),
      metadata: { ...r.volume().metadata, annotations: { [REVERT_ANNOTATION]: "d1-snap/1" } },
    };
    await runningWith(r.hv, r.disk.path);
    expect(await syncRevert(asked, r.context)).toEqual({ requeueAfterMs: 10_000 });
    expect(r.writes.events.at(-1)).toMatchObject({ reason: "VolumeInUse" });
    expect(r.hv.content(r.disk.path)).toBe("overwritten");
    await r.hv.powerOff("vm-1");
    await syncRevert(asked, r.context);
    expect(r.hv.content(r.disk.path)).toBe("original");
    expect(r.writes.reverts.get("team-a/d1")).toBe("d1-snap/1");
    // Done once: the same request is not carried out again.
    r.hv.write(r.disk.path, "newer");
    await syncRevert({ ...asked, status: { ...asked.status, revertedTo: "d1-snap/1" } }, r.context);
    expect(r.hv.content(r.disk.path)).toBe("newer");
  });

  it("says why it cannot take a snapshot, and removes the file of a deleted one", async () => {
    const r = await rig("x");
    await syncSnapshot(snapshotOf("d1"), { ...r.context, secondaryPath: () => undefined });
    expect(r.writes.snapshotStatuses.get("team-a/d1-snap")).toMatchObject({
      phase: "Error",
      conditions: [{ type: "Ready", status: "False", reason: "NoSecondaryStorage" }],
    });
    r.setVolume(dataVolume("d1", {}, { host: "h2", pool: "local-h2", path: "/h2/data-vol-d1" }));
    await syncSnapshot(snapshotOf("d1"), r.context);
    expect(r.writes.snapshotStatuses.get("team-a/d1-snap")).toMatchObject({ phase: "Error" });

    const r2 = await rig("y");
    const snapshot = snapshotOf("d1");
    await syncSnapshot(snapshot, r2.context);
    const taken = r2.taken(snapshot);
    const path = taken.status?.path as string;
    expect(r2.hv.content(path)).toBe("y");
    await syncSnapshot(
      { ...taken, metadata: { ...taken.metadata, deletionTimestamp: "2026-11-30T09:00:00Z" } },
      r2.context,
    );
    expect(r2.hv.content(path)).toBeUndefined();
    expect(r2.writes.writes.at(-1)).toBe("finalizer volumesnapshots/team-a/d1-snap");
  });

  it("keeps a snapshot in the zone's store: uploaded from a staging file it removes, fetched and checked for a revert, removed with the snapshot", async () => {
    const r = await rig("pattern");
    const store = new MemoryStore(r.hv);
    const context: SnapshotContext = {
      ...r.context,
      snapshotStore: () => S3,
      store,
      stagingDir: "/tmp/stratus-unit-staging",
    };
    const snapshot = r.taken(snapshotOf("d1"));
    await syncSnapshot(snapshot, context);
    const taken = r.taken(snapshot);
    const key = snapshotKey(snapshot);
    expect(taken.status).toMatchObject({
      phase: "Ready",
      object: { endpoint: S3.endpoint, bucket: "snaps", key: "snapshots/team-a/snap-of-d1.qcow2" },
      conditions: [{ reason: "BackedUp", message: expect.stringContaining(`s3://snaps/${key}`) }],
    });
    expect(taken.status?.path).toBeUndefined();
    expect(store.objects.get(key)?.content).toBe("pattern");
    expect(r.hv.calls).toContain("remove staged /tmp/stratus-unit-staging/snap-of-d1.upload.qcow2");

    r.hv.write(r.disk.path, "overwritten");
    const asked = {
      ...r.volume(),
      metadata: { ...r.volume().metadata, annotations: { [REVERT_ANNOTATION]: "d1-snap/1" } },
    };
    await syncRevert(asked, context);
    expect(r.hv.content(r.disk.path)).toBe("pattern");
    // An object changed in the store is not used: its checksum is not the one recorded.
    store.objects.set(key, { capacityBytes: 2n ** 30n, content: "tampered" });
    r.hv.write(r.disk.path, "newer");
    await syncRevert(
      { ...asked, metadata: { ...asked.metadata, annotations: { [REVERT_ANNOTATION]: "d1-snap/2" } } },
      context,
    );
    expect(r.writes.events.at(-1)).toMatchObject({ reason: "SnapshotChecksumMismatch" });
    expect(r.hv.content(r.disk.path)).toBe("newer");

    await syncSnapshot(
      { ...taken, metadata: { ...taken.metadata, deletionTimestamp: "2026-11-30T09:00:00Z" } },
      context,
    );
    expect(store.objects.has(key)).toBe(false);
    expect(r.writes.writes.at(-1)).toBe("finalizer volumesnapshots/team-a/d1-snap");
  });
});

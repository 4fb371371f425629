// Volume snapshots on the host holding the disk: taking one (a flattened copy on the zone's
// secondary storage, checksummed: a file on its shared path, or an object in its S3-compatible
// store, uploaded from a staging file of this host), removing it when it is deleted, putting a disk
// back to one (revert), and filling a new disk from one. A running guest is paused for the copy:
// QEMU flushes its disks when it pauses, so the copy is never torn; the pause is as long as the
// copy (not the upload) and is recorded in the snapshot's status.
import { mkdir, rm } from "node:fs/promises";
import type { Logger } from "pino";
import { SNAPSHOT_DATA_FINALIZER } from "../crds/finalizers.ts";
import { REVERT_ANNOTATION, Resources, type Volume, type VolumeSnapshot } from "../crds/index.ts";
import { formatQuantity } from "../crds/quantity.ts";
import type { AgentWrites } from "./agent-writes.ts";
import type { Hypervisor, ObservedDomain, StagedDisk } from "./hypervisor.ts";
import type { PoolSync } from "./pool-sync.ts";
import { HostProblem } from "./problem.ts";
import type { S3Config, SnapshotStore, StoreObject } from "./snapshot-store.ts";
import { diskNameOf } from "./volume-sync.ts";

/** How this host reaches the zones' S3-compatible stores. */
export interface SnapshotAccess {
  /** The zone's store, when it names one: its snapshots go there rather than to its path. */
  snapshotStore(zone: string): S3Config | undefined;
  store: SnapshotStore;
  /** A directory of this host for a snapshot's file on its way to or from a store. */
  stagingDir: string;
}

const noStore = async (): Promise<never> => {
  throw new HostProblem("NoSnapshotStore", "This host agent reaches no S3-compatible store.");
};

/** A host that reaches no store: a snapshot kept in one is a problem it reports. */
export const NO_SNAPSHOT_STORE: SnapshotAccess = {
  snapshotStore: () => undefined,
  store: { upload: noStore, download: noStore, remove: noStore },
  stagingDir: "/nonexistent",
};

export interface SnapshotContext extends SnapshotAccess {
  host: string;
  hypervisor: Hypervisor;
  storage: Pick<PoolSync, "pathOf">;
  writes: AgentWrites;
  /** A Volume or VolumeSnapshot of a namespace, read fresh (the agent caches neither for other hosts). */
  volume(namespace: string, name: string): Promise<Volume | undefined>;
  snapshot(namespace: string, name: string): Promise<VolumeSnapshot | undefined>;
  secondaryPath(zone: string): string | undefined;
  /** The VM UIDs this agent paused for a copy right now: the VM loop leaves them paused. */
  pausedForCopy: Set<string>;
  now?: () => Date;
  log: Logger;
}

/** Where a snapshot's file lives on secondary storage. */
export function snapshotPath(secondary: string, volume: Volume, snapshot: VolumeSnapshot): string {
  return `${secondary}/snapshots/${volume.metadata.namespace}/${volume.metadata.uid}/${snapshot.metadata.uid}.qcow2`;
}

/** Where a snapshot's object is kept in its zone's store. */
export function snapshotKey(snapshot: VolumeSnapshot): string {
  return `snapshots/${snapshot.metadata.namespace}/${snapshot.metadata.uid}.qcow2`;
}

const stagingFile = (access: SnapshotAccess, snapshot: VolumeSnapshot, use: "upload" | "download") =>
  `${access.stagingDir}/${snapshot.metadata.uid}.${use}.qcow2`;

/**
 * A ready snapshot's copy as a file of this host (what importDisk copies and checks): its file on
 * the shared path, or its object fetched and checked against its sha256; `release` removes a fetch.
 */
export async function snapshotCopy(
  snapshot: VolumeSnapshot,
  access: SnapshotAccess,
): Promise<{ staged: StagedDisk; release: () => Promise<void> } | undefined> {
  const { path, object, sha256, zone } = snapshot.status ?? {};
  if (snapshot.status?.phase !== "Ready" || !sha256) return undefined;
  if (path) return { staged: { path, sha256, bytes: 0 }, release: async () => undefined };
  if (!object) return undefined;
  const file = stagingFile(access, snapshot, "download");
  await mkdir(access.stagingDir, { recursive: true, mode: 0o700 });
  // From the store it was taken to, signed for the zone's region.
  await access.store.download(object, file, sha256, zone ? access.snapshotStore(zone)?.region : undefined);
  return { staged: { path: file, sha256, bytes: 0 }, release: () => rm(file, { force: true }) };
}

/** The running domain of this host whose disks include `path`. */
async function domainUsing(hv: Hypervisor, path: string | undefined): Promise<ObservedDomain | undefined> {
  if (!path) return undefined;
  return (await hv.listDomains()).find((d) => d.state !== "shutoff" && d.disks.some((x) => x.path === path));
}

export async function syncSnapshot(
  snapshot: VolumeSnapshot | undefined,
  context: SnapshotContext,
): Promise<{ requeueAfterMs: number } | undefined> {
  if (!snapshot || snapshot.status?.host !== context.host) return undefined;
  const { hypervisor: hv, writes, log } = context;
  const ref = snapshot.metadata as { namespace: string; name: string };
  if (snapshot.metadata.deletionTimestamp) {
    if (!snapshot.metadata.finalizers?.includes(SNAPSHOT_DATA_FINALIZER)) return undefined;
    if (snapshot.status?.path) await hv.removeStaged(snapshot.status.path);
    // An upload begun but never recorded leaves its staging file and, maybe, its object.
    await hv.removeStaged(stagingFile(context, snapshot, "upload"));
    const store = snapshot.status?.zone ? context.snapshotStore(snapshot.status.zone) : undefined;
    const object =
      snapshot.status?.object ??
      (store ? { endpoint: store.endpoint, bucket: store.bucket, key: snapshotKey(snapshot) } : undefined);
    if (object) await context.store.remove(object, store?.region);
    if (await writes.removeFinalizer(Resources.volumeSnapshots, snapshot, SNAPSHOT_DATA_FINALIZER))
      log.info({ path: snapshot.status?.path }, "snapshot file removed");
    return undefined;
  }
  if (snapshot.status?.phase === "Ready" || snapshot.status?.phase === "Error") return undefined;
  const failed = async (reason: string, message: string) => {
    await writes.snapshotStatus(ref, {
      observedGeneration: snapshot.metadata.generation ?? 0,
      phase: "Error",
      conditions: [ready("False", reason, message, context)],
    });
    await writes.event(Resources.volumeSnapshots, snapshot, {
      type: "Warning",
      reason,
      action: "Snapshot",
      note: message,
    });
    return undefined;
  };
  const volume = await context.volume(ref.namespace, snapshot.spec.volume);
  const pool = volume?.status?.pool;
  const disk = volume ? diskNameOf(volume) : undefined;
  if (!volume || !pool || !disk || volume.status?.host !== context.host || !context.storage.pathOf(pool))
    return failed(
      "VolumeLeftHost",
      `Volume ${snapshot.spec.volume} is no longer on host ${context.host}; take the snapshot again.`,
    );
  const store = context.snapshotStore(volume.spec.zone);
  const secondary = context.secondaryPath(volume.spec.zone);
  if (!store && !secondary)
    return failed(
      "NoSecondaryStorage",
      `Zone ${volume.spec.zone} names no secondary storage (spec.secondaryStorage.path or s3).`,
    );
  if (store) await mkdir(context.stagingDir, { recursive: true, mode: 0o700 });
  const target = store
    ? stagingFile(context, snapshot, "upload")
    : snapshotPath(secondary as string, volume, snapshot);
  const running = await domainUsing(hv, volume.status?.path);
  let pausedMs = 0;
  let staged: StagedDisk;
  let object: StoreObject | undefined;
  try {
    if (running?.state === "running") {
      const pausedAt = Date.now();
      context.pausedForCopy.add(running.vmUid);
      try {
        await hv.pause(running.vmUid);
        staged = await hv.exportDisk(pool, disk, target, { pausedDomain: true });
      } finally {
        await hv.resume(running.vmUid);
        context.pausedForCopy.delete(running.vmUid);
        pausedMs = Date.now() - pausedAt;
      }
    } else {
      staged = await hv.exportDisk(pool, disk, target);
    }
    if (store) {
      try {
        object = await context.store.upload(store, snapshotKey(snapshot), staged.path, staged.sha256);
      } finally {
        await hv.removeStaged(staged.path);
      }
    }
  } catch (error) {
    if (error instanceof HostProblem) return failed(error.reason, error.message);
    throw error;
  }
  await writes.snapshotStatus(ref, {
    observedGeneration: snapshot.metadata.generation ?? 0,
    phase: "Ready",
    ...(object ? { object } : { path: staged.path }),
    sha256: staged.sha256,
    size: formatQuantity(BigInt(staged.bytes)),
    ...(volume.status?.capacity ? { virtualSize: volume.status.capacity } : {}),
    takenAt: (context.now?.() ?? new Date()).toISOString(),
    pausedMilliseconds: pausedMs,
    conditions: [
      ready(
        "True",
        "BackedUp",
        object
          ? `Uploaded to s3://${object.bucket}/${object.key} (${staged.bytes} bytes).`
          : `Copied to secondary storage (${staged.bytes} bytes).`,
        context,
      ),
    ],
  });
  log.info({ path: staged.path, bytes: staged.bytes, pausedMs }, "snapshot taken");
  return undefined;
}

function ready(status: "True" | "False", reason: string, message: string, context: SnapshotContext) {
  return {
    type: "Ready",
    status,
    reason,
    message,
    lastTransitionTime: (context.now?.() ?? new Date()).toISOString().replace(/\.\d{3}Z$/, "Z"),
  };
}

/**
 * A revert asked for on a Volume this host holds: the disk becomes the snapshot's copy, verified,
 * once no running guest uses it (CloudStack reverts only stopped VMs' volumes).
 */
export async function syncRevert(
  volume: Volume | undefined,
  context: SnapshotContext,
): Promise<{ requeueAfterMs: number } | undefined> {
  const request = volume?.metadata.annotations?.[REVERT_ANNOTATION];
  if (!volume || !request || volume.status?.revertedTo === request || volume.metadata.deletionTimestamp)
    return undefined;
  const pool = volume.status?.pool;
  const disk = diskNameOf(volume);
  if (volume.status?.host !== context.host || !pool || !disk || !context.storage.pathOf(pool))
    return undefined;
  const { hypervisor: hv, writes, log } = context;
  const refuse = async (reason: string, note: string, requeueAfterMs: number) => {
    await writes.event(Resources.volumes, volume, { type: "Warning", reason, action: "Revert", note });
    return { requeueAfterMs };
  };
  const name = request.split("/")[0] ?? "";
  const snapshot = await context.snapshot(volume.metadata.namespace as string, name);
  if (
    !snapshot ||
    snapshot.spec.volume !== volume.metadata.name ||
    snapshot.status?.phase !== "Ready" ||
    !snapshot.status.sha256
  )
    return refuse(
      "SnapshotNotUsable",
      `Snapshot ${name} is not a ready snapshot of volume ${volume.metadata.name}.`,
      30_000,
    );
  const running = await domainUsing(hv, volume.status?.path);
  if (running)
    return refuse(
      "VolumeInUse",
      `VM ${running.vm?.name ?? running.vmUid} is running with this volume; stop it to revert.`,
      10_000,
    );
  let sha256 = "";
  try {
    const copy = await snapshotCopy(snapshot, context);
    if (!copy) return refuse("SnapshotNotUsable", `Snapshot ${name} has no copy to revert to.`, 30_000);
    sha256 = copy.staged.sha256;
    try {
      await hv.importDisk(pool, disk, copy.staged);
    } finally {
      await copy.release();
    }
  } catch (error) {
    if (error instanceof HostProblem) return refuse(error.reason, error.message, 30_000);
    throw error;
  }
  await writes.volumeReverted(volume.metadata as { namespace: string; name: string }, request);
  log.info({ snapshot: name }, "volume reverted to a snapshot");
  await writes.event(Resources.volumes, volume, {
    type: "Normal",
    reason: "Reverted",
    action: "Revert",
    note: `The disk is back to snapshot ${name} (sha256 ${sha256}).`,
  });
  return undefined;
}

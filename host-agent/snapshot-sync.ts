// Volume snapshots on the host holding the disk: taking one (a flattened copy on the zone's
// secondary storage, checksummed), removing its file when it is deleted, putting a disk back to
// one (revert), and filling a new disk from one. A running guest is paused for the copy: QEMU
// flushes its disks when it pauses, so the copy is never torn; the pause is as long as the copy
// and is recorded in the snapshot's status.
import type { Logger } from "pino";
import { SNAPSHOT_DATA_FINALIZER } from "../crds/finalizers.ts";
import { REVERT_ANNOTATION, Resources, type Volume, type VolumeSnapshot } from "../crds/index.ts";
import { formatQuantity } from "../crds/quantity.ts";
import type { AgentWrites } from "./agent-writes.ts";
import type { Hypervisor, ObservedDomain, StagedDisk } from "./hypervisor.ts";
import type { PoolSync } from "./pool-sync.ts";
import { HostProblem } from "./problem.ts";
import { diskNameOf } from "./volume-sync.ts";

export interface SnapshotContext {
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

/** The snapshot's file as a staged disk (what importDisk copies and checks). */
export function stagedFrom(snapshot: VolumeSnapshot): StagedDisk | undefined {
  const { path, sha256 } = snapshot.status ?? {};
  return path && sha256 && snapshot.status?.phase === "Ready" ? { path, sha256, bytes: 0 } : undefined;
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
  const secondary = context.secondaryPath(volume.spec.zone);
  if (!secondary)
    return failed(
      "NoSecondaryStorage",
      `Zone ${volume.spec.zone} names no secondary storage (spec.secondaryStorage.path).`,
    );
  const running = await domainUsing(hv, volume.status?.path);
  let pausedMs = 0;
  let staged: StagedDisk;
  try {
    if (running?.state === "running") {
      const pausedAt = Date.now();
      context.pausedForCopy.add(running.vmUid);
      try {
        await hv.pause(running.vmUid);
        staged = await hv.exportDisk(pool, disk, snapshotPath(secondary, volume, snapshot), {
          pausedDomain: true,
        });
      } finally {
        await hv.resume(running.vmUid);
        context.pausedForCopy.delete(running.vmUid);
        pausedMs = Date.now() - pausedAt;
      }
    } else {
      staged = await hv.exportDisk(pool, disk, snapshotPath(secondary, volume, snapshot));
    }
  } catch (error) {
    if (error instanceof HostProblem) return failed(error.reason, error.message);
    throw error;
  }
  await writes.snapshotStatus(ref, {
    observedGeneration: snapshot.metadata.generation ?? 0,
    phase: "Ready",
    path: staged.path,
    sha256: staged.sha256,
    size: formatQuantity(BigInt(staged.bytes)),
    ...(volume.status?.capacity ? { virtualSize: volume.status.capacity } : {}),
    takenAt: (context.now?.() ?? new Date()).toISOString(),
    pausedMilliseconds: pausedMs,
    conditions: [ready("True", "BackedUp", `Copied to secondary storage (${staged.bytes} bytes).`, context)],
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
  const staged = snapshot ? stagedFrom(snapshot) : undefined;
  if (!snapshot || snapshot.spec.volume !== volume.metadata.name || !staged)
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
  try {
    await hv.importDisk(pool, disk, staged);
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
    note: `The disk is back to snapshot ${name} (sha256 ${staged.sha256}).`,
  });
  return undefined;
}

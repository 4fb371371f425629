// A volume's disk moving to a pool its VM's new host reaches, as CloudStack copies a volume between
// primary storages through secondary storage. The storage controller names the target
// (status.transfer.target); then, level-triggered on the Volume:
//   1. the holding agent (status.host) flattens the stopped disk into the zone's secondary storage
//      and writes `exported` (path, sha256);
//   2. the target agent announces its copy (`received` with `pending`, on the version that names it
//      the target, so the storage controller can no longer change the target), copies the staged
//      disk into the target pool, checks the hash, and writes `received` without `pending`;
//   3. the holding agent, seeing a verified copy, deletes its own disk and the staged copy and
//      rewrites host, pool and path to the new place.
// The old disk goes only after step 2 proved the new one: a crash at any line repeats a step. The
// target and the holder may be one host (a move between two pools it reaches). A copy exists only
// after its announcement, so one left by a Volume deleted mid-move is found and removed by its host.
import type { Logger } from "pino";
import { Resources, type Volume } from "../crds/index.ts";
import type { AgentWrites } from "./agent-writes.ts";
import type { Hypervisor } from "./hypervisor.ts";
import type { PoolSync } from "./pool-sync.ts";
import { HostProblem } from "./problem.ts";
import { diskNameOf } from "./volume-sync.ts";

export interface TransferContext {
  host: string;
  hypervisor: Hypervisor;
  storage: Pick<PoolSync, "pathOf" | "typeOf">;
  writes: AgentWrites;
  /** The zone's secondary storage directory, if it names one. */
  secondaryPath(zone: string): string | undefined;
  /** The Volume as the API server has it now, when the agent's cache may be behind. */
  fresh?: (volume: Volume) => Promise<Volume | undefined>;
  log: Logger;
}

type Transfer = NonNullable<NonNullable<Volume["status"]>["transfer"]>;

/** Where a move stages a volume's disk on secondary storage. */
export function stagingPath(secondary: string, volume: Volume): string {
  return `${secondary}/transfers/${volume.metadata.uid}.qcow2`;
}

export async function syncVolumeTransfer(
  cached: Volume | undefined,
  context: TransferContext,
): Promise<{ requeueAfterMs: number } | undefined> {
  // A move decides on what the API server has now: from a cache behind its own write, the holder
  // would stage the disk again (its apply dropping the target's proof of a copy), then delete its
  // disk for a copy no longer on record.
  const volume = cached?.status?.transfer?.target && context.fresh ? await context.fresh(cached) : cached;
  if (!volume || volume.metadata.deletionTimestamp) return undefined;
  const disk = diskNameOf(volume);
  if (!disk) return undefined;
  const transfer = volume.status?.transfer;
  const holds =
    volume.status?.host === context.host &&
    volume.status.pool !== undefined &&
    context.storage.pathOf(volume.status.pool) !== undefined;
  if (holds) {
    const sent = await sendSide(volume, disk, transfer, context);
    // One host moving a disk between two of its own pools is the target as well.
    if (sent || transfer?.target?.host !== context.host) return sent;
  }
  if (transfer?.target?.host === context.host) return receiveSide(volume, disk, transfer, context);
  return undefined;
}

/** A copy this host made (or began) for a move whose Volume is being deleted: removed, then forgotten. */
export async function discardIncomingCopy(
  volume: Volume | undefined,
  context: TransferContext,
): Promise<void> {
  const received = volume?.status?.transfer?.received;
  const disk = volume ? diskNameOf(volume) : undefined;
  if (!volume?.metadata.deletionTimestamp || !received || received.host !== context.host || !disk) return;
  // The hand-over made it the volume's disk: that one goes with the volume, as any other.
  if (volume.status?.pool === received.pool && volume.status.host === received.host) return;
  if (context.storage.pathOf(received.pool) === undefined) return; // the pool is back, or gone with its files
  await context.hypervisor.deleteDisk(received.pool, disk);
  const { exported } = volume.status?.transfer ?? {};
  await context.writes.volumeTransfer(
    volume.metadata as { namespace: string; name: string },
    exported ? { exported } : {},
    volume.metadata.resourceVersion,
  );
  context.log.info({ pool: received.pool }, "removed the copy of a volume deleted while it moved");
}

async function sendSide(
  volume: Volume,
  disk: string,
  transfer: Transfer | undefined,
  context: TransferContext,
): Promise<{ requeueAfterMs: number } | undefined> {
  const { hypervisor: hv, writes, log } = context;
  const pool = volume.status?.pool as string;
  const ref = volume.metadata as { namespace: string; name: string };
  const target = transfer?.target;
  if (!target || target.pool === pool) {
    // A finished (or called-off) move leaves its staged copy and steps behind: clean them up.
    if (transfer?.exported || transfer?.received) {
      if (transfer.exported) await hv.removeStaged(transfer.exported.path);
      // A copy elsewhere stays on record until its host removes it.
      const { received } = transfer;
      await writes.volumeTransfer(ref, received && received.pool !== pool ? { received } : {});
      log.info("cleared the steps of a finished move");
    }
    return undefined;
  }
  const path = volume.status?.path;
  const running = (await hv.listDomains()).find(
    (d) => d.state !== "shutoff" && d.disks.some((x) => x.path === path),
  );
  if (running) {
    log.info({ vm: running.vm }, "the disk is in use by a running domain here; it moves once that stops");
    return { requeueAfterMs: 5_000 };
  }
  const { exported, received } = transfer;
  if (
    exported &&
    received &&
    !received.pending &&
    received.pool === target.pool &&
    received.host === target.host &&
    received.sha256 === exported.sha256
  ) {
    await hv.deleteDisk(pool, disk);
    await hv.removeStaged(exported.path);
    const poolType = context.storage.typeOf(received.pool);
    await writes.volumeStatus(ref, volume, {
      observedGeneration: volume.metadata.generation ?? 0,
      phase: "Ready",
      host: received.host,
      pool: received.pool,
      ...(poolType ? { poolType } : {}),
      path: received.path,
      ...(volume.status?.capacity ? { capacity: volume.status.capacity } : {}),
    });
    // The steps are the new holder's to clear: this host may no longer write the volume (admission).
    log.info({ from: pool, to: received.pool, host: received.host }, "volume moved; the old disk is deleted");
    await writes.event(Resources.volumes, volume, {
      type: "Normal",
      reason: "VolumeMoved",
      action: "Move",
      note: `Moved from pool ${pool} (host ${context.host}) to pool ${received.pool} (host ${received.host}); sha256 ${received.sha256}.`,
    });
    return undefined;
  }
  if (exported) return undefined; // the target agent's turn
  const secondary = context.secondaryPath(volume.spec.zone);
  if (!secondary) {
    await writes.event(Resources.volumes, volume, {
      type: "Warning",
      reason: "NoSecondaryStorage",
      action: "Move",
      note: `Zone ${volume.spec.zone} names no secondary storage (spec.secondaryStorage.path); the disk cannot be copied to pool ${target.pool}.`,
    });
    return { requeueAfterMs: 30_000 };
  }
  const staged = await hv.exportDisk(pool, disk, stagingPath(secondary, volume));
  await writes.volumeTransfer(ref, { exported: staged });
  log.info({ staged: staged.path, bytes: staged.bytes }, "volume staged for its move");
  return undefined;
}

async function receiveSide(
  volume: Volume,
  disk: string,
  transfer: Transfer,
  context: TransferContext,
): Promise<{ requeueAfterMs: number } | undefined> {
  const { hypervisor: hv, writes, log } = context;
  const target = transfer.target as NonNullable<Transfer["target"]>;
  const { exported, received } = transfer;
  if (!exported || volume.status?.pool === target.pool) return undefined;
  const ours =
    received &&
    received.pool === target.pool &&
    received.host === context.host &&
    received.sha256 === exported.sha256;
  if (ours && !received.pending) return undefined; // the holding agent's turn
  const poolPath = context.storage.pathOf(target.pool);
  if (poolPath === undefined) {
    log.warn({ pool: target.pool }, "the target pool of a move is not ready here");
    return { requeueAfterMs: 10_000 };
  }
  const ref = volume.metadata as { namespace: string; name: string };
  const step = {
    pool: target.pool,
    host: context.host,
    path: `${poolPath}/${disk}`,
    sha256: exported.sha256,
  };
  if (!ours) {
    // Announced on the version that names this host the target: a conflict means the target
    // changed meanwhile, and no byte was copied.
    await writes.volumeTransfer(
      ref,
      { exported, received: { ...step, pending: true } },
      volume.metadata.resourceVersion,
    );
    log.info({ pool: target.pool }, "copy of a moving volume announced");
  }
  try {
    const copy = await hv.importDisk(target.pool, disk, exported);
    await writes.volumeTransfer(ref, { exported, received: { ...step, path: copy.path } });
    log.info({ pool: target.pool, path: copy.path }, "volume copied in and verified");
    return undefined;
  } catch (error) {
    if (!(error instanceof HostProblem)) throw error;
    await writes.event(Resources.volumes, volume, {
      type: "Warning",
      reason: error.reason,
      action: "Move",
      note: `${error.message} (host ${context.host}); the old disk is kept, the copy is tried again.`,
    });
    return { requeueAfterMs: 15_000 };
  }
}

// The disks a run plan needs on this host: template images fetched once and checked, the root
// overlay and the data disks created (or grown while no domain holds them), and growth of data
// disks inside a running guest.
import type { Logger } from "pino";
import type { VirtualMachine, VolumeSnapshot } from "../crds/index.ts";
import type { Hypervisor } from "./hypervisor.ts";
import { checkImage, downloadOnce } from "./images.ts";
import type { DataDiskPlan, DiskHome, RunPlan } from "./planner.ts";
import { HostProblem } from "./problem.ts";
import { type SnapshotAccess, snapshotCopy } from "./snapshot-sync.ts";

export interface ImageStore {
  download(source: string, target: string, checksum: string | undefined): Promise<void>;
  check(path: string, format: "qcow2" | "raw"): Promise<{ virtualSize: bigint }>;
}

export const FILE_IMAGES: ImageStore = { download: downloadOnce, check: checkImage };

/** The root disk (image downloaded and checked first) and the data disks, created when missing. */
/** The ISO drive's disc, copied into the cache and checked: a raw image, no backing file. */
export async function prepareDisc(
  images: ImageStore,
  host: string,
  vm: VirtualMachine,
  disc: NonNullable<RunPlan["iso"]>,
): Promise<string> {
  if (disc.url) await images.download(disc.url, disc.path, disc.checksum);
  await images.check(disc.path, "raw").catch((error: unknown) => {
    if (error instanceof HostProblem) throw error;
    throw new HostProblem(
      "ImageUnreadable",
      `ISO ${vm.spec.iso} at ${disc.path} cannot be read on host ${host}: ${(error as Error).message}`,
    );
  });
  return disc.path;
}

export async function prepareDisks(
  hv: Hypervisor,
  images: ImageStore,
  host: string,
  vm: VirtualMachine,
  plan: RunPlan,
  grow: boolean,
  snapshot: (namespace: string, name: string) => Promise<VolumeSnapshot | undefined>,
  snapshots: SnapshotAccess,
) {
  const what = `VM ${vm.metadata.namespace}/${vm.metadata.name}`;
  if (plan.directBoot)
    for (const part of [plan.directBoot.kernel, plan.directBoot.initrd])
      await images.download(part.url, part.path, undefined);
  if (plan.iso) await prepareDisc(images, host, vm, plan.iso);
  let root: Awaited<ReturnType<Hypervisor["ensureDisk"]>> | undefined;
  if (plan.root) {
    let size = plan.root.requestedBytes;
    const image = plan.root.image;
    if (image) {
      if (image.url) await images.download(image.url, image.path, image.checksum);
      const facts = await images.check(image.path, image.format).catch((error: unknown) => {
        if (error instanceof HostProblem) throw error;
        throw new HostProblem(
          "ImageUnreadable",
          `template image ${image.path} cannot be read on host ${host}: ${(error as Error).message}`,
        );
      });
      if (facts.virtualSize > size) size = facts.virtualSize;
    }
    await mustExist(
      hv,
      plan.root,
      `root volume ${vm.metadata.namespace}/${plan.root.volume.metadata.name}`,
      host,
    );
    root = await hv.ensureDisk({
      pool: plan.root.pool,
      name: plan.root.name,
      capacityBytes: size,
      ...(image ? { backing: { path: image.path, format: image.format } } : {}),
      what: `root disk of ${what}`,
      grow,
    });
  }
  for (const disk of plan.dataDisks) {
    await mustExist(hv, disk, `volume ${vm.metadata.namespace}/${disk.volume.metadata.name}`, host);
    await fillFromSnapshot(hv, disk, snapshot, snapshots);
    await hv.ensureDisk({
      pool: disk.pool,
      name: disk.name,
      capacityBytes: disk.capacityBytes,
      what: `volume ${vm.metadata.namespace}/${disk.volume.metadata.name}`,
      grow,
    });
  }
  return root;
}

/** A new disk of a volume made from a snapshot starts as a verified copy of the snapshot's file. */
async function fillFromSnapshot(
  hv: Hypervisor,
  disk: DataDiskPlan,
  snapshot: (namespace: string, name: string) => Promise<VolumeSnapshot | undefined>,
  snapshots: SnapshotAccess,
) {
  const source = disk.volume.spec.source?.snapshot;
  if (!source || disk.existing || (await hv.disk(disk.pool, disk.name))) return;
  const found = await snapshot(disk.volume.metadata.namespace as string, source);
  const copy = found ? await snapshotCopy(found, snapshots) : undefined;
  if (!copy)
    throw new HostProblem(
      "SnapshotNotReady",
      `Volume ${disk.volume.metadata.name} is made from snapshot ${source}, which ${found ? "is not ready" : "does not exist"}.`,
    );
  try {
    await hv.importDisk(disk.pool, disk.name, copy.staged);
  } finally {
    await copy.release();
  }
}

/** A disk that was made once is never made again: a missing one is a problem to report, not to paper over. */
async function mustExist(hv: Hypervisor, disk: DiskHome & { name: string }, what: string, host: string) {
  if (!disk.existing || !hv.disksPersist || (await hv.disk(disk.pool, disk.name))) return;
  throw new HostProblem(
    "DiskMissing",
    `The disk of ${what} is not in pool ${disk.pool} on host ${host}; it is not recreated empty (that would lose its data).`,
  );
}

/** A volume grown while its domain runs grows in the running guest (QEMU holds the file). */
export async function growLiveDisks(
  hv: Hypervisor,
  uid: string,
  disks: DataDiskPlan[],
  targets: Map<string, string>,
  log: Logger,
) {
  for (const disk of disks) {
    const info = await hv.disk(disk.pool, disk.name);
    const target = info ? targets.get(info.path) : undefined;
    if (!info || !target || disk.capacityBytes <= info.capacityBytes) continue;
    if ((await hv.liveDiskBytes(uid, target)) < disk.capacityBytes) {
      await hv.growLiveDisk(uid, target, disk.capacityBytes);
      log.info({ target, bytes: String(disk.capacityBytes) }, "grew a volume in the running guest");
    }
  }
}

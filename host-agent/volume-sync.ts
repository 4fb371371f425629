// The disks of deleted Volumes: a Volume whose disk is on this host (status.host) and which is
// being deleted loses its disk file here, once no VM on this host uses it, and then its
// stratus.io/disk finalizer. Disks of Volumes that still exist are never removed.
import type { Logger } from "pino";
import { DISK_FINALIZER } from "../crds/finalizers.ts";
import { Resources, type VirtualMachine, type Volume } from "../crds/index.ts";
import type { AgentWrites } from "./agent-writes.ts";
import type { Hypervisor } from "./hypervisor.ts";
import { dataDiskName, rootDiskName } from "./planner.ts";

/** The disk file a Volume has on its host. */
export function diskNameOf(volume: Volume): string | undefined {
  if (volume.spec.type !== "ROOT") return dataDiskName(volume.metadata.uid as string);
  const owner = volume.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine");
  return owner ? rootDiskName(owner.uid) : undefined;
}

/** Whether a live VM bound here still uses the volume (attaches it, or owns it as its root). */
function usedBy(volume: Volume, vms: readonly VirtualMachine[]): VirtualMachine | undefined {
  return vms.find(
    (vm) =>
      !vm.metadata.deletionTimestamp &&
      vm.metadata.namespace === volume.metadata.namespace &&
      (volume.spec.type === "ROOT"
        ? volume.metadata.ownerReferences?.some((o) => o.uid === vm.metadata.uid)
        : (vm.spec.dataVolumes ?? []).some((d) => d.volume === volume.metadata.name)),
  );
}

export async function syncVolumeDeletion(
  volume: Volume | undefined,
  context: {
    host: string;
    hypervisor: Hypervisor;
    writes: AgentWrites;
    boundVms: () => VirtualMachine[];
    log: Logger;
  },
): Promise<{ requeueAfterMs: number } | undefined> {
  if (!volume?.metadata.deletionTimestamp || !volume.metadata.finalizers?.includes(DISK_FINALIZER))
    return undefined;
  if (volume.status?.host !== context.host) return undefined;
  const user = usedBy(volume, context.boundVms());
  if (user) {
    context.log.info({ vm: user.metadata.name }, "volume still in use here; keeping its disk");
    return { requeueAfterMs: 10_000 };
  }
  const disk = diskNameOf(volume);
  const pool = volume.status?.pool;
  const { exported, received } = volume.status?.transfer ?? {};
  // Deleted mid-move: the copy's own host removes it first, else nobody would know it is there.
  if (received && received.host !== context.host && received.pool !== pool) {
    context.log.info({ host: received.host }, "waiting for the target of the move to remove its copy");
    return { requeueAfterMs: 10_000 };
  }
  if (exported) await context.hypervisor.removeStaged(exported.path);
  if (disk && pool) await context.hypervisor.deleteDisk(pool, disk);
  if (await context.writes.removeFinalizer(Resources.volumes, volume, DISK_FINALIZER))
    context.log.info({ disk }, "volume disk deleted");
  return undefined;
}

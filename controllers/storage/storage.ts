// Storage: binds each volume to the storage pool of the host its VM is placed on (Volume
// status.host, which that host's agent watches), follows the VM when it moves, and holds the
// deletion of a volume some VM still attaches.
import { Resources, rootVolumeName, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { isNotFound } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { addFinalizer, applyStatus, removeFinalizer } from "../../runtime/objects.ts";

export const STORAGE_FINALIZER = "stratus.io/storage";

/** The VM a volume belongs to: its owner for a ROOT volume, else the VM attaching it. */
export function volumeUser(volume: Volume, attaching: readonly VirtualMachine[]): VirtualMachine | undefined {
  const live = attaching.filter((vm) => !vm.metadata.deletionTimestamp);
  const holder = volume.status?.attachedTo?.virtualMachine;
  return (
    live.find((vm) => vm.metadata.name === holder) ??
    // Two VMs asking for one volume: the older one gets it (compute tells the other why not).
    [...live].sort(
      (a, b) =>
        (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? "") ||
        (a.metadata.name as string).localeCompare(b.metadata.name as string),
    )[0]
  );
}

export const storageComponent: Component = {
  name: "storage",
  description: "storage: volume binding to host pools, deletion guard for attached volumes",
  setup({ client, informers, metrics, logger, fieldManager }) {
    const volumes = informers.for<Volume>(Resources.volumes);
    const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
      indexers: {
        volume: (vm) => [
          ...(vm.spec.dataVolumes ?? []).map((d) => `${vm.metadata.namespace}/${d.volume}`),
          `${vm.metadata.namespace}/${rootVolumeName(vm.metadata.name as string)}`,
        ],
      },
    });

    const controller = new Controller({
      name: "storage",
      logger,
      metrics,
      async reconcile(key, log) {
        const volume = volumes.get(key);
        if (!volume) return;
        const candidates = vms
          .byIndex("volume", key)
          .filter((vm) =>
            volume.spec.type === "ROOT"
              ? volume.metadata.ownerReferences?.some((o) => o.uid === vm.metadata.uid)
              : (vm.spec.dataVolumes ?? []).some((d) => d.volume === volume.metadata.name),
          );
        const user = volumeUser(volume, candidates);
        if (volume.metadata.deletionTimestamp) {
          if (user && volume.spec.type !== "ROOT") {
            await writeInUse(
              volume,
              `Deletion waits: VM ${user.metadata.name} attaches the volume; detach it first.`,
            );
            return;
          }
          if (await removeFinalizer(client, Resources.volumes, volume, STORAGE_FINALIZER))
            log.info("no VM attaches the volume; released it for deletion");
          return;
        }
        if (await addFinalizer(client, Resources.volumes, volume, STORAGE_FINALIZER)) return;
        const host = user?.status?.host;
        if (host && volume.status?.host !== host) {
          // Bound (or moved) to the pool of the host that runs its VM; that host's agent creates it.
          await applyStatus(
            client,
            Resources.volumes,
            volume,
            // Only the binding: the phase is the agent's, which knows whether the disk exists.
            { host },
            fieldManager,
          );
          log.info({ host, from: volume.status?.host }, "bound the volume to its VM's host");
        }
        await writeInUse(volume, undefined, user);
      },
    })
      .watch(volumes)
      .watch(vms, (vm) => [
        ...(vm.spec.dataVolumes ?? []).map((d) => `${vm.metadata.namespace}/${d.volume}`),
        `${vm.metadata.namespace}/${rootVolumeName(vm.metadata.name as string)}`,
      ]);

    async function writeInUse(
      volume: Volume,
      waiting: string | undefined,
      user?: VirtualMachine,
    ): Promise<void> {
      const inUse = waiting !== undefined || user !== undefined;
      const conditions = ownConditions(
        volume.status?.conditions as Condition[] | undefined,
        volume.metadata.generation,
        [
          {
            type: "InUse",
            status: inUse ? "True" : "False",
            reason: waiting ? "DeletionBlocked" : inUse ? "Attached" : "Detached",
            message: waiting ?? (user ? `Used by VM ${user.metadata.name}.` : "No VM uses the volume."),
          },
        ],
      );
      try {
        await applyStatus(client, Resources.volumes, volume, { conditions }, fieldManager);
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    }
    return [controller];
  },
};

// Storage: the deletion guard of data volumes (InUse, and the stratus.io/storage finalizer held
// while a VM attaches the volume), and the release of volumes no host ever made a disk for. Where
// a disk lives (status.host, phase, path) is a fact only the agent whose pool holds it can tell.
import { DISK_FINALIZER, STORAGE_FINALIZER } from "../../crds/finalizers.ts";
import { Resources, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { isNotFound } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { applyStatus, notWrittenIfGone, removeFinalizer } from "../../runtime/objects.ts";

/** The VM a data volume belongs to: the VM attaching it, else the oldest VM asking for it. */
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

const dataVolumeKeys = (vm: VirtualMachine) =>
  (vm.spec.dataVolumes ?? []).map((d) => `${vm.metadata.namespace}/${d.volume}`);

export const storageComponent: Component = {
  name: "storage",
  description: "storage: deletion guard for attached data volumes, release of volumes without a disk",
  setup({ client, informers, metrics, logger, fieldManager }) {
    const volumes = informers.for<Volume>(Resources.volumes);
    const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
      indexers: { dataVolume: dataVolumeKeys },
    });

    const controller = new Controller({
      name: "storage",
      logger,
      metrics,
      async reconcile(key, log) {
        const volume = volumes.get(key);
        if (!volume) return;
        const isData = volume.spec.type !== "ROOT";
        const user = isData ? volumeUser(volume, vms.byIndex("dataVolume", key)) : undefined;
        if (!volume.metadata.deletionTimestamp) {
          if (isData) await writeInUse(volume, undefined, user);
          return;
        }
        if (user) {
          await writeInUse(
            volume,
            `Deletion waits: VM ${user.metadata.name} attaches the volume; detach it first.`,
          );
          return;
        }
        if (
          await removeFinalizer(client, Resources.volumes, volume, STORAGE_FINALIZER).catch(notWrittenIfGone)
        ) {
          log.info("no VM attaches the volume; released it for deletion");
          return; // the next version comes through the watch
        }
        // No host's pool ever held it: no agent will come to remove a disk that does not exist.
        if (
          !volume.status?.host &&
          (await removeFinalizer(client, Resources.volumes, volume, DISK_FINALIZER).catch(notWrittenIfGone))
        )
          log.info("no disk was ever created for the volume; released it");
      },
    })
      .watch(volumes)
      .watch(vms, dataVolumeKeys);

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

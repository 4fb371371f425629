// CloudStack's volume commands over the caller's Volumes: list, create (empty, or from a backed-up
// snapshot of the same account), attach and detach (an entry of the VM's dataVolumes), resize,
// update and delete (refused for a root disk or an attached volume).
import { Resources, type VirtualMachine, type Volume, type VolumeSnapshot } from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { attachedTo, submitJob } from "./jobs.ts";
import { byId, filtered, namespaced, ownedById, page, patchFromCurrent } from "./listing.ts";
import { DNS_LABEL } from "./params.ts";
import { snapshotState } from "./snapshot-views.ts";
import { volumeView } from "./views.ts";

const GIB = 1024n ** 3n;

function ownerVm(api: CloudStackApi, volume: Volume): VirtualMachine | undefined {
  const owner = volume.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine");
  return owner ? api.vms.get(`${volume.metadata.namespace}/${owner.name}`) : undefined;
}

type Slots = NonNullable<VirtualMachine["spec"]["dataVolumes"]>;

/**
 * Changes a VM's dataVolumes from its current version, guarded by its resourceVersion (two
 * attaches at once must not drop one).
 */
function updateDataVolumes(call: Call, vm: VirtualMachine, change: (slots: Slots) => Slots): Promise<void> {
  return patchFromCurrent(call, Resources.virtualMachines, vm, (current) => ({
    spec: { dataVolumes: change(current.spec.dataVolumes ?? []) },
  }));
}

/** createVolume's snapshotid: a backed-up snapshot of the caller's own account. */
async function snapshotForVolume(call: Call): Promise<VolumeSnapshot> {
  const snapshot = await ownedById(call, call.api.volumeSnapshots, Resources.volumeSnapshots, "snapshotid");
  if (snapshot.metadata.namespace !== call.caller.account)
    throw new ApiError(
      ERROR.PARAM,
      `Snapshot id=${snapshot.metadata.uid} belongs to account ${snapshot.metadata.namespace}: a volume is made from a snapshot of its own account`,
    );
  if (snapshotState(snapshot) !== "BackedUp")
    throw new ApiError(
      ERROR.PARAM,
      `Snapshot id=${snapshot.metadata.uid} is not in BackedUp state yet and can't be used for volume creation`,
    );
  return snapshot;
}

function snapshotZone(api: CloudStackApi, snapshot: VolumeSnapshot): string {
  const zone =
    snapshot.status?.zone ??
    api.volume(snapshot.metadata.namespace as string, snapshot.spec.volume)?.spec.zone;
  if (!zone)
    throw new ApiError(
      ERROR.PARAM,
      `Snapshot ${snapshot.metadata.name} has no zone yet; wait until it is BackedUp`,
    );
  return zone;
}

/** GiB for a volume from the snapshot: the size asked for, which may not be less than the snapshot's disk. */
function sizeFromSnapshot(snapshot: VolumeSnapshot, asked: number | undefined): number | undefined {
  const virtual = snapshot.status?.virtualSize ? parseQuantity(snapshot.status.virtualSize) : undefined;
  const needed = virtual === undefined ? undefined : Number((virtual + GIB - 1n) / GIB);
  if (asked !== undefined && needed !== undefined && asked < needed)
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter size value=${asked}: a volume from snapshot ${snapshot.metadata.name} needs at least ${needed} GiB`,
    );
  return asked ?? needed;
}

export const VOLUME_COMMANDS: Record<string, Command> = {
  listVolumes: {
    async handler(call) {
      const type = call.params.get("type")?.toUpperCase();
      const vmId = call.params.uuid("virtualmachineid");
      const volumes = filtered(call, await namespaced(call, call.api.volumes, Resources.volumes))
        .filter((v) => !type || (v.spec.type ?? "DATADISK") === type)
        .map(
          (v) =>
            volumeView(v, call.api, attachedTo(call.api, v) ?? ownerVm(call.api, v)) as Record<string, Json>,
        )
        .filter((v) => !vmId || v.virtualmachineid === vmId);
      return page(call, "volume", volumes);
    },
  },
  createVolume: {
    async: true,
    async handler(call) {
      const { params, api } = call;
      const name = (params.get("name") ?? `vol-${Math.random().toString(16).slice(2, 10)}`).toLowerCase();
      if (!DNS_LABEL.test(name)) throw new ApiError(ERROR.PARAM, `Invalid parameter name value=${name}`);
      // From a snapshot: its zone, and at least its disk's size (CloudStack ignores zoneid then).
      const snapshot = params.uuid("snapshotid") ? await snapshotForVolume(call) : undefined;
      const zoneName = snapshot ? snapshotZone(api, snapshot) : byId(api.zones, call, "zoneid").metadata.name;
      const offeringId = params.uuid("diskofferingid");
      const offering = offeringId ? byId(api.diskOfferings, call, "diskofferingid") : undefined;
      const size = snapshot ? sizeFromSnapshot(snapshot, params.integer("size")) : params.integer("size");
      if (!offering?.spec.size && !size)
        throw new ApiError(
          ERROR.PARAM,
          "Unable to execute API command createvolume due to missing parameter size (the disk offering has no size)",
        );
      const volume = await call.caller.client.create<Volume>(Resources.volumes, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "Volume",
        metadata: { name, namespace: call.caller.account },
        spec: {
          zone: zoneName as string,
          type: "DATADISK",
          ...(size ? { size: `${size}Gi` } : {}),
          ...(offering ? { diskOffering: offering.metadata.name as string } : {}),
          ...(snapshot ? { source: { snapshot: snapshot.metadata.name as string } } : {}),
        },
      });
      const job = await submitJob(call, "createVolume", { ...volume, kind: "Volume" });
      return { id: volume.metadata.uid as string, jobid: job.metadata.uid as string };
    },
  },
  attachVolume: {
    async: true,
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines, "virtualmachineid");
      if (vm.metadata.namespace !== volume.metadata.namespace)
        throw new ApiError(ERROR.PARAM, "the volume and the VM belong to different accounts");
      await updateDataVolumes(call, vm, (slots) => {
        if (slots.some((slot) => slot.volume === volume.metadata.name)) return slots;
        const taken = new Set(slots.map((slot) => slot.name));
        let index = 1;
        while (taken.has(`data${index}`)) index++;
        return [...slots, { name: `data${index}`, volume: volume.metadata.name as string }];
      });
      const job = await submitJob(call, "attachVolume", { ...volume, kind: "Volume" });
      return { jobid: job.metadata.uid as string };
    },
  },
  detachVolume: {
    async: true,
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      const holders = call.api.vms
        .list()
        .filter(
          (vm) =>
            vm.metadata.namespace === volume.metadata.namespace &&
            (vm.spec.dataVolumes ?? []).some((slot) => slot.volume === volume.metadata.name),
        );
      for (const vm of holders)
        await updateDataVolumes(call, vm, (slots) =>
          slots.filter((slot) => slot.volume !== volume.metadata.name),
        );
      const job = await submitJob(call, "detachVolume", { ...volume, kind: "Volume" });
      return { jobid: job.metadata.uid as string };
    },
  },
  resizeVolume: {
    async: true,
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      const size = call.params.integer("size");
      if (!size)
        throw new ApiError(
          ERROR.PARAM,
          "Unable to execute API command resizevolume due to missing parameter size",
        );
      await call.caller.client.mergePatch(
        Resources.volumes,
        volume.metadata.name as string,
        volume.metadata.namespace,
        {
          spec: { size: `${size}Gi` },
        },
      );
      const job = await submitJob(call, "resizeVolume", { ...volume, kind: "Volume" });
      return { jobid: job.metadata.uid as string };
    },
  },
  deleteVolume: {
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      if (volume.status?.attachedTo || volume.spec.type === "ROOT")
        throw new ApiError(
          ERROR.RESOURCE_IN_USE,
          `Please specify a volume that is not attached to any VM (${volume.metadata.name})`,
        );
      await call.caller.client.delete(
        Resources.volumes,
        volume.metadata.name as string,
        volume.metadata.namespace,
      );
      return { success: true };
    },
  },
  updateVolume: {
    async: true,
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      const job = await submitJob(call, "updateVolume", { ...volume, kind: "Volume" });
      return { jobid: job.metadata.uid as string };
    },
  },
};

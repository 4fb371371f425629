// Compute (the orchestration engine): carries a VM across the kinds it needs. It creates the root
// Volume from the template (owned by the VM, so it goes with it), decides whether the VM's volumes
// are ready for its host (VolumesReady), and keeps the CloudStack state while no host reports one
// (Pending, Stopped, Destroyed). Placement, addresses and domains belong to the scheduler, the
// network controller and the host agents; each writes only its own fields and conditions.
import {
  needsRootVolume,
  Resources,
  rootVolumeName,
  type Template,
  type VirtualMachine,
  type Volume,
} from "../../crds/index.ts";
import { isAlreadyExists, isNotFound, objectKey } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { applyStatus, ownerReference } from "../../runtime/objects.ts";

export const computeComponent: Component = {
  name: "compute",
  description: "orchestration: root volumes, volume readiness, VM state before and after a host",
  setup({ client, informers, metrics, logger, fieldManager }) {
    const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
      indexers: {
        volume: (vm) => (vm.spec.dataVolumes ?? []).map((d) => `${vm.metadata.namespace}/${d.volume}`),
      },
    });
    const volumes = informers.for<Volume>(Resources.volumes);
    const templates = informers.for<Template>(Resources.templates);

    /** Why the VM's volumes are not ready for it, or undefined when they are. */
    function volumeProblem(vm: VirtualMachine, template: Template | undefined): ConditionInput | undefined {
      const namespace = vm.metadata.namespace as string;
      if (!template)
        return {
          type: "VolumesReady",
          status: "False",
          reason: "TemplateNotFound",
          message: `Template "${vm.spec.template}" does not exist.`,
        };
      if (
        needsRootVolume(vm, template) &&
        !volumes.get(`${namespace}/${rootVolumeName(vm.metadata.name as string)}`)
      )
        return {
          type: "VolumesReady",
          status: "False",
          reason: "Creating",
          message: "Creating the root volume.",
        };
      for (const slot of vm.spec.dataVolumes ?? []) {
        const volume = volumes.get(`${namespace}/${slot.volume}`);
        if (!volume || volume.metadata.deletionTimestamp)
          return {
            type: "VolumesReady",
            status: "False",
            reason: "VolumeNotFound",
            message: `Volume "${slot.volume}" ${volume ? "is being deleted" : "does not exist"}.`,
          };
        if (volume.spec.type === "ROOT")
          return {
            type: "VolumesReady",
            status: "False",
            reason: "NotADataVolume",
            message: `Volume "${slot.volume}" is another VM's root volume.`,
          };
        const holder = volume.status?.attachedTo?.virtualMachine;
        if (holder && holder !== vm.metadata.name)
          return {
            type: "VolumesReady",
            status: "False",
            reason: "VolumeAttachedElsewhere",
            message: `Volume "${slot.volume}" is attached to VM ${holder}.`,
          };
        if (volume.spec.zone !== vm.spec.zone)
          return {
            type: "VolumesReady",
            status: "False",
            reason: "VolumeInOtherZone",
            message: `Volume "${slot.volume}" is in zone ${volume.spec.zone}, the VM in ${vm.spec.zone}.`,
          };
      }
      return undefined;
    }

    const controller = new Controller({
      name: "compute",
      logger,
      metrics,
      async reconcile(key, log) {
        const vm = vms.get(key);
        if (!vm) return;
        const name = vm.metadata.name as string;
        const namespace = vm.metadata.namespace as string;
        if (vm.metadata.deletionTimestamp) {
          // Children go by owner reference; the agents' finalizers hold the VM until its domain is gone.
          await applyStatus(
            client,
            Resources.virtualMachines,
            vm,
            { state: "Destroyed" },
            fieldManager,
          ).catch((error: unknown) => {
            if (!isNotFound(error)) throw error;
          });
          return;
        }
        const template = templates.get(vm.spec.template);
        let createRoot: Promise<void> | undefined;
        if (template && needsRootVolume(vm, template)) {
          const rootKey = `${namespace}/${rootVolumeName(name)}`;
          const root = volumes.get(rootKey);
          if (!root) {
            // Sent alongside the status write below, not before it: two writes in parallel keep
            // this controller's reconcile at one round trip (it is the busiest under load).
            createRoot = (async () => {
              try {
                await client.create<Volume>(Resources.volumes, {
                  apiVersion: "stratus.io/v1alpha1",
                  kind: "Volume",
                  metadata: {
                    name: rootVolumeName(name),
                    namespace,
                    labels: { "stratus.io/virtual-machine": name },
                    ownerReferences: [ownerReference(Resources.virtualMachines, vm)],
                  },
                  spec: {
                    zone: vm.spec.zone,
                    type: "ROOT",
                    size: vm.spec.rootDisk?.size ?? template.spec.minimumDiskSize ?? "1Gi",
                    ...(vm.spec.rootDisk?.diskOffering
                      ? { diskOffering: vm.spec.rootDisk.diskOffering }
                      : {}),
                    source: { template: vm.spec.template },
                  },
                });
                log.info({ volume: rootVolumeName(name) }, "created the root volume");
              } catch (error) {
                if (!isAlreadyExists(error)) throw error;
              }
            })();
          } else if (!root.metadata.ownerReferences?.some((o) => o.uid === vm.metadata.uid)) {
            const problem: ConditionInput = {
              type: "VolumesReady",
              status: "False",
              reason: "RootVolumeNameTaken",
              message: `Volume "${rootVolumeName(name)}" exists and does not belong to this VM; delete or rename it.`,
            };
            await writeStatus(vm, problem);
            return;
          }
        }
        await Promise.all([
          createRoot,
          writeStatus(
            vm,
            volumeProblem(vm, template) ?? {
              type: "VolumesReady",
              status: "True",
              reason: "VolumesAvailable",
              message: `${(vm.spec.dataVolumes ?? []).length} data volume(s) available.`,
            },
          ),
        ]);
      },
    });

    async function writeStatus(vm: VirtualMachine, volumesReady: ConditionInput): Promise<void> {
      const conditions = ownConditions(
        vm.status?.conditions as Condition[] | undefined,
        vm.metadata.generation,
        [volumesReady],
      );
      // Until a host reports on the VM, its state is the orchestration's to tell.
      const unplaced = !vm.status?.host;
      const state = vm.spec.runStrategy === "Halted" ? "Stopped" : "Pending";
      await applyStatus(
        client,
        Resources.virtualMachines,
        vm,
        { ...(unplaced ? { state } : {}), conditions },
        fieldManager,
      );
    }

    controller
      .watch(vms)
      .watch(volumes, (volume) => {
        const owner = volume.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine");
        return [
          ...vms.byIndex("volume", objectKey(volume)).map(objectKey),
          ...(owner ? [`${volume.metadata.namespace}/${owner.name}`] : []),
        ];
      })
      .watch(templates, (template) =>
        vms
          .list()
          .filter((vm) => vm.spec.template === template.metadata.name)
          .map(objectKey),
      );
    return [controller];
  },
};

// Scheduler: places each VM that has no host on one, and records the choice in VM status with the
// VM's resourceVersion as a precondition. Usage comes from the informer cache plus the placements
// this process made that the cache has not shown yet (like kube-scheduler's assumed pods), so a
// burst of creates never overcommits a host.
import {
  type Host,
  Resources,
  type ServiceOffering,
  type VirtualMachine,
  type Zone,
} from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { isConflict, isNotFound, objectKey } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { statusSays } from "../../runtime/objects.ts";
import { type Algorithm, type Demand, type HostUsage, place } from "./placement.ts";

/** How often a VM that fits nowhere is tried again even if nothing it depends on changed. */
const UNSCHEDULABLE_RETRY_MS = 30_000;

interface Assumed {
  host: string;
  cpu: number;
  memoryBytes: bigint;
  antiAffinityGroup?: string;
}

export function schedulerComponent(algorithm: Algorithm = "least-allocated"): Component {
  return {
    name: "scheduler",
    description: `places VMs on hosts (filters, then ${algorithm})`,
    setup({ client, informers, metrics, logger, fieldManager }) {
      const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
        indexers: {
          host: (vm) => (vm.status?.host ? [vm.status.host] : []),
          unplaced: (vm) => (vm.status?.host ? [] : [vm.spec.zone]),
        },
      });
      const hosts = informers.for<Host>(Resources.hosts);
      const zones = informers.for<Zone>(Resources.zones);
      const offerings = informers.for<ServiceOffering>(Resources.serviceOfferings);
      const assumed = new Map<string, Assumed>();
      // Once the cache shows a placement (or the VM is gone) it no longer needs assuming.
      vms.addHandlers({
        onAdd: (vm) => vm.status?.host && assumed.delete(objectKey(vm)),
        onUpdate: (_, vm) => vm.status?.host && assumed.delete(objectKey(vm)),
        onDelete: (vm) => assumed.delete(objectKey(vm)),
      });

      const demandOf = (vm: VirtualMachine, offering: ServiceOffering): Demand => ({
        zone: vm.spec.zone,
        cpu: offering.spec.cpu,
        memoryBytes: parseQuantity(offering.spec.memory),
        hostTags: [...(offering.spec.hostTags ?? []), ...(vm.spec.placement?.hostTags ?? [])],
        ...(vm.spec.placement?.antiAffinityGroup
          ? { antiAffinityGroup: `${vm.metadata.namespace}/${vm.spec.placement.antiAffinityGroup}` }
          : {}),
        ...(vm.spec.placement?.host ? { pinnedHost: vm.spec.placement.host } : {}),
      });

      const usageOf = (host: Host): HostUsage => {
        const name = host.metadata.name as string;
        const usage = { host, cpu: 0, memoryBytes: 0n, antiAffinityGroups: new Set<string>() };
        const add = (cpu: number, memoryBytes: bigint, group: string | undefined) => {
          usage.cpu += cpu;
          usage.memoryBytes += memoryBytes;
          if (group) usage.antiAffinityGroups.add(group);
        };
        for (const vm of vms.byIndex("host", name)) {
          const offering = offerings.get(vm.spec.serviceOffering);
          const group = vm.spec.placement?.antiAffinityGroup;
          add(
            offering?.spec.cpu ?? 0,
            offering ? parseQuantity(offering.spec.memory) : 0n,
            group ? `${vm.metadata.namespace}/${group}` : undefined,
          );
        }
        for (const placement of assumed.values()) {
          if (placement.host === name) add(placement.cpu, placement.memoryBytes, placement.antiAffinityGroup);
        }
        return usage;
      };

      const writeScheduled = async (
        vm: VirtualMachine,
        condition: ConditionInput,
        host?: string,
      ): Promise<void> => {
        const conditions = ownConditions(
          vm.status?.conditions as Condition[] | undefined,
          vm.metadata.generation,
          [condition],
        );
        const status = { ...(host ? { host } : {}), conditions };
        if (statusSays(status, (vm.status ?? {}) as Record<string, unknown>)) return;
        await client.apply(
          Resources.virtualMachines,
          {
            metadata: {
              name: vm.metadata.name as string,
              namespace: vm.metadata.namespace as string,
              // The precondition: placed from what this VM was, never twice by racing schedulers.
              ...(host ? { resourceVersion: vm.metadata.resourceVersion as string } : {}),
            },
            status,
          },
          { fieldManager, subresource: "status" },
        );
      };

      const controller = new Controller({
        name: "scheduler",
        logger,
        metrics,
        async reconcile(key, log) {
          const vm = vms.get(key);
          if (!vm || vm.metadata.deletionTimestamp || vm.status?.host || assumed.has(key)) return undefined;
          if (vm.spec.runStrategy === "Halted") {
            await writeScheduled(vm, {
              type: "Scheduled",
              status: "False",
              reason: "Halted",
              message: "runStrategy is Halted: the VM is placed when it is asked to run.",
            });
            return undefined;
          }
          const offering = offerings.get(vm.spec.serviceOffering);
          if (!offering) {
            await writeScheduled(vm, {
              type: "Scheduled",
              status: "False",
              reason: "ServiceOfferingNotFound",
              message: `ServiceOffering "${vm.spec.serviceOffering}" does not exist.`,
            });
            return undefined;
          }
          const zone = zones.get(vm.spec.zone);
          if (zone && (zone.spec.allocationState ?? "Enabled") !== "Enabled") {
            await writeScheduled(vm, {
              type: "Scheduled",
              status: "False",
              reason: "ZoneDisabled",
              message: `Zone ${vm.spec.zone} is disabled: no new VMs are placed in it.`,
            });
            return undefined;
          }
          const demand = demandOf(vm, offering);
          const placement = place(demand, hosts.list().map(usageOf), algorithm);
          if (!placement.host) {
            await writeScheduled(vm, {
              type: "Scheduled",
              status: "False",
              reason: "Unschedulable",
              message: placement.message,
            });
            return { requeueAfterMs: UNSCHEDULABLE_RETRY_MS };
          }
          // Assumed before the write, with no await between choosing and assuming: another worker
          // choosing meanwhile already counts this VM.
          assumed.set(key, {
            host: placement.host,
            cpu: demand.cpu,
            memoryBytes: demand.memoryBytes,
            ...(demand.antiAffinityGroup ? { antiAffinityGroup: demand.antiAffinityGroup } : {}),
          });
          try {
            await writeScheduled(
              vm,
              { type: "Scheduled", status: "True", reason: "Placed", message: placement.message },
              placement.host,
            );
          } catch (error) {
            assumed.delete(key);
            // Changed meanwhile (or gone): the watch brings the new version, which is tried afresh.
            if (isConflict(error) || isNotFound(error)) return undefined;
            throw error;
          }
          log.info({ host: placement.host }, "placed");
          return undefined;
        },
      });
      const unplacedIn = (zone: string) => vms.byIndex("unplaced", zone).map(objectKey);
      controller
        .watch(vms, (vm) => (vm.status?.host ? unplacedIn(vm.spec.zone) : [objectKey(vm)]))
        .watch(hosts, (host) => unplacedIn(host.spec.zone))
        .watch(zones, (zone) => unplacedIn(zone.metadata.name as string))
        .watch(offerings, () =>
          vms
            .list()
            .filter((vm) => !vm.status?.host)
            .map(objectKey),
        );
      return [controller];
    },
  };
}

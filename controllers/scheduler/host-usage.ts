// What each host already carries: the VMs the informer cache shows on it plus the placements this
// process made that the cache does not show yet (like kube-scheduler's assumed pods), so a burst of
// placements never overcommits a host. Choosing and assuming happen with no await in between.
import type { Host, ServiceOffering, VirtualMachine } from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { objectKey } from "../../runtime/client.ts";
import type { Informer } from "../../runtime/informer.ts";
import type { Demand, HostUsage } from "./placement.ts";

interface Assumed {
  host: string;
  cpu: number;
  memoryBytes: bigint;
  antiAffinityGroup?: string;
}

/** The informer index of VMs by status.host that HostUsageCache reads. */
export const VMS_BY_HOST = {
  host: (vm: VirtualMachine) => (vm.status?.host ? [vm.status.host] : []),
};

export class HostUsageCache {
  private readonly assumed = new Map<string, Assumed>();
  private readonly vms: Informer<VirtualMachine>;
  private readonly offerings: Informer<ServiceOffering>;

  /** `vms` must carry the VMS_BY_HOST index. */
  constructor(vms: Informer<VirtualMachine>, offerings: Informer<ServiceOffering>) {
    this.vms = vms;
    this.offerings = offerings;
    // Once the cache shows the VM on the assumed host (or the VM is gone) it needs no assuming.
    const settle = (vm: VirtualMachine) => {
      const key = objectKey(vm);
      if (vm.status?.host && this.assumed.get(key)?.host === vm.status.host) this.assumed.delete(key);
    };
    vms.addHandlers({
      onAdd: settle,
      onUpdate: (_, vm) => settle(vm),
      onDelete: (vm) => this.assumed.delete(objectKey(vm)),
    });
  }

  /** What the VM asks of a host. */
  static demandOf(
    vm: VirtualMachine,
    offering: ServiceOffering,
    volumeHosts: Demand["volumeHosts"] = [],
  ): Demand {
    return {
      zone: vm.spec.zone,
      cpu: offering.spec.cpu,
      memoryBytes: parseQuantity(offering.spec.memory),
      hostTags: [...(offering.spec.hostTags ?? []), ...(vm.spec.placement?.hostTags ?? [])],
      ...(vm.spec.placement?.antiAffinityGroup
        ? { antiAffinityGroup: `${vm.metadata.namespace}/${vm.spec.placement.antiAffinityGroup}` }
        : {}),
      ...(vm.spec.placement?.host ? { pinnedHost: vm.spec.placement.host } : {}),
      ...(volumeHosts.length > 0 ? { volumeHosts } : {}),
    };
  }

  /** Whether this process placed the VM and the cache does not show it yet. */
  isAssumed(vmKey: string): boolean {
    return this.assumed.has(vmKey);
  }

  /** Counts the VM on `host` until the cache shows it there. */
  assume(vmKey: string, host: string, demand: Demand): void {
    this.assumed.set(vmKey, {
      host,
      cpu: demand.cpu,
      memoryBytes: demand.memoryBytes,
      ...(demand.antiAffinityGroup ? { antiAffinityGroup: demand.antiAffinityGroup } : {}),
    });
  }

  /** The placement was not written: it must not count. */
  forget(vmKey: string): void {
    this.assumed.delete(vmKey);
  }

  usageOf(host: Host): HostUsage {
    const name = host.metadata.name as string;
    const usage = { host, cpu: 0, memoryBytes: 0n, antiAffinityGroups: new Set<string>() };
    const add = (cpu: number, memoryBytes: bigint, group: string | undefined) => {
      usage.cpu += cpu;
      usage.memoryBytes += memoryBytes;
      if (group) usage.antiAffinityGroups.add(group);
    };
    for (const vm of this.vms.byIndex("host", name)) {
      // A VM this process is moving counts on its new host only.
      if (this.assumed.has(objectKey(vm))) continue;
      const offering = this.offerings.get(vm.spec.serviceOffering);
      const group = vm.spec.placement?.antiAffinityGroup;
      add(
        offering?.spec.cpu ?? 0,
        offering ? parseQuantity(offering.spec.memory) : 0n,
        group ? `${vm.metadata.namespace}/${group}` : undefined,
      );
    }
    for (const placement of this.assumed.values())
      if (placement.host === name) add(placement.cpu, placement.memoryBytes, placement.antiAffinityGroup);
    return usage;
  }
}

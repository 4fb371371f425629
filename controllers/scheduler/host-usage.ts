// What each host already carries: the VMs the informer cache shows on it plus the placements this
// process made that the cache does not show yet (like kube-scheduler's assumed pods), so a burst of
// placements never overcommits a host. Choosing and assuming happen with no await in between.
import type { AffinityType, Host, ServiceOffering, VirtualMachine } from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { accountComputeUse, type ComputeUse } from "../../crds/resource-limits.ts";
import { objectKey } from "../../runtime/client.ts";
import type { Informer } from "../../runtime/informer.ts";
import type { Demand, HostUsage } from "./placement.ts";

interface Assumed {
  host: string;
  cpu: number;
  memoryBytes: bigint;
  groups: readonly string[];
}

/** The VM's affinity groups by rule, as `<namespace>/<group>`, and the names no group answers for. */
export interface VmAffinity {
  affinityGroups: string[];
  antiAffinityGroups: string[];
  missing: string[];
}

/** Every group the VM is a member of, `<namespace>/<group>`: the legacy antiAffinityGroup too. */
export function groupsOf(vm: VirtualMachine): string[] {
  const placement = vm.spec.placement;
  const names = [
    ...(placement?.antiAffinityGroup ? [placement.antiAffinityGroup] : []),
    ...(placement?.affinityGroups ?? []),
  ];
  return [...new Set(names)].map((name) => `${vm.metadata.namespace}/${name}`);
}

/**
 * The VM's groups sorted by their AffinityGroup's type. The legacy `antiAffinityGroup` needs no
 * object: it is an anti-affinity group by definition.
 */
export function affinityOf(
  vm: VirtualMachine,
  typeOf: (name: string) => AffinityType | undefined,
): VmAffinity {
  const key = (name: string) => `${vm.metadata.namespace}/${name}`;
  const legacy = vm.spec.placement?.antiAffinityGroup;
  const affinity: VmAffinity = {
    affinityGroups: [],
    antiAffinityGroups: legacy ? [key(legacy)] : [],
    missing: [],
  };
  for (const name of vm.spec.placement?.affinityGroups ?? []) {
    const type = typeOf(name);
    if (type === "host affinity") affinity.affinityGroups.push(key(name));
    else if (type === "host anti-affinity") affinity.antiAffinityGroups.push(key(name));
    else affinity.missing.push(name);
  }
  return affinity;
}

/** The informer indexes of placed VMs, by status.host and by namespace, that HostUsageCache reads. */
export const VMS_BY_HOST = {
  host: (vm: VirtualMachine) => (vm.status?.host ? [vm.status.host] : []),
  placedIn: (vm: VirtualMachine) => (vm.status?.host ? [vm.metadata.namespace as string] : []),
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
    affinity: Pick<VmAffinity, "affinityGroups" | "antiAffinityGroups"> = affinityOf(vm, () => undefined),
  ): Demand {
    return {
      zone: vm.spec.zone,
      cpu: offering.spec.cpu,
      memoryBytes: parseQuantity(offering.spec.memory),
      hostTags: [...(offering.spec.hostTags ?? []), ...(vm.spec.placement?.hostTags ?? [])],
      ...(affinity.antiAffinityGroups.length > 0 ? { antiAffinityGroups: affinity.antiAffinityGroups } : {}),
      ...(affinity.affinityGroups.length > 0 ? { affinityGroups: affinity.affinityGroups } : {}),
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
      groups: [...(demand.antiAffinityGroups ?? []), ...(demand.affinityGroups ?? [])],
    });
  }

  /** The placement was not written: it must not count. */
  forget(vmKey: string): void {
    this.assumed.delete(vmKey);
  }

  /**
   * The CPUs and memory an account's placed VMs take (running or stopped, as CloudStack counts),
   * with the placements this process made that the cache does not show yet.
   */
  accountUsage(namespace: string): ComputeUse {
    const used = accountComputeUse(
      this.vms.byIndex("placedIn", namespace).filter((vm) => !this.assumed.has(objectKey(vm))),
      (name) => this.offerings.get(name),
    );
    for (const [key, placement] of this.assumed)
      if (key.startsWith(`${namespace}/`)) {
        used.cpu += placement.cpu;
        used.memoryBytes += placement.memoryBytes;
      }
    return used;
  }

  /** What the host carries, but `exceptVm` (a key): a VM that moves is not bound by itself. */
  usageOf(host: Host, exceptVm?: string): HostUsage {
    const name = host.metadata.name as string;
    const usage = { host, cpu: 0, memoryBytes: 0n, groups: new Set<string>() };
    const add = (cpu: number, memoryBytes: bigint, groups: readonly string[]) => {
      usage.cpu += cpu;
      usage.memoryBytes += memoryBytes;
      for (const group of groups) usage.groups.add(group);
    };
    for (const vm of this.vms.byIndex("host", name)) {
      // A VM this process is moving counts on its new host only.
      if (this.assumed.has(objectKey(vm)) || objectKey(vm) === exceptVm) continue;
      const offering = this.offerings.get(vm.spec.serviceOffering);
      add(offering?.spec.cpu ?? 0, offering ? parseQuantity(offering.spec.memory) : 0n, groupsOf(vm));
    }
    for (const placement of this.assumed.values())
      if (placement.host === name) add(placement.cpu, placement.memoryBytes, placement.groups);
    return usage;
  }
}

// Pure: what the orchestrator writes for a VM, from what the cache and its own creates show. As
// CloudStack's orchestrateStart, volumes and NICs are made ready first and the VM is placed only
// then, so a host never gets a VM it cannot start; all of it is one status write.
import {
  type AffinityType,
  type Host,
  isReleasedByFailover,
  needsRootVolume,
  type ServiceOffering,
  type StoragePool,
  type Template,
  type VirtualMachine,
  type Volume,
  type Zone,
} from "../../crds/index.ts";
import { nicMacAddress } from "../../crds/nics.ts";
import { type ComputeLimits, type ComputeUse, computeLimitProblem } from "../../crds/resource-limits.ts";
import {
  localPoolHosts,
  type PoolUsage,
  unreachableVolume,
  type VolumeNeed,
} from "../../crds/volume-placement.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import type { NicAddressing } from "../network/ipam.ts";
import { affinityOf, HostUsageCache } from "../scheduler/host-usage.ts";
import { type Algorithm, type Demand, type HostUsage, place } from "../scheduler/placement.ts";

/** How often a VM that fits nowhere is tried again even if nothing it depends on changed. */
export const UNSCHEDULABLE_RETRY_MS = 30_000;

/** The VM's ROOT Volume as far as the orchestrator knows it. */
export type RootVolumeFact =
  | "not-needed" // the template boots a kernel directly
  | "ready" // in the cache and owned by the VM, or created just now
  | "foreign" // a volume of that name exists and belongs to someone else
  | "unconfirmed" // the create said it exists, the cache does not show it yet
  | "over-limit"; // the account's volume limit refused it (rootVolumeRefusal says how)

export interface OrchestrationInput {
  vm: VirtualMachine;
  template: Template | undefined;
  offering: ServiceOffering | undefined;
  zone: Zone | undefined;
  rootVolume: RootVolumeFact;
  /** Why the account's limit refused the ROOT Volume (with rootVolume "over-limit"). */
  rootVolumeRefusal?: string;
  /** Why the account's primary-storage limit holds one of the VM's volumes (its Admitted=False). */
  storageRefusal?: string;
  /** One of the VM's volumes whose size the storage controller has not granted or refused yet. */
  storageUndecided?: string;
  /** The account's CPU and memory limits (its ResourceQuota stratus-resource-limits). */
  accountLimits: ComputeLimits;
  /** What the account's placed VMs take; called only when the VM needs a host and has limits. */
  accountUsage: () => ComputeUse;
  /** The data volumes the spec names, by name, as the cache shows them. */
  dataVolumes: ReadonlyMap<string, Volume>;
  nics: readonly NicAddressing[];
  /** What each of the VM's volumes (ROOT and data) asks of its pool, and where its disk is. */
  volumeNeeds: readonly VolumeNeed[];
  /** Where a disk that is being moved is going (transfer.target.pool), by volume name. */
  moveTargets: ReadonlyMap<string, string>;
  /** The StoragePools of the VM's zone. */
  pools: readonly StoragePool[];
  /** The Host of that name, from the cache. */
  hostNamed: (name: string) => Host | undefined;
  /** The hosts with what they carry; called only when the VM needs a host. */
  hostUsages: () => readonly HostUsage[];
  /** The zone's pools with what their volumes take; called only when the VM needs a host. */
  poolUsages: () => readonly PoolUsage[];
  algorithm: Algorithm;
  /** The type of the AffinityGroup of that name in the VM's namespace, from the cache. */
  affinityGroupType: (name: string) => AffinityType | undefined;
  /** The target of a live migration of the VM from its current host that completed: it runs there now. */
  migratedTo?: string;
  now?: Date;
}

export interface OrchestrationDecision {
  /** Compute's whole share of VM status, or undefined when nothing can be said yet. */
  status?: {
    host?: string;
    nics: { name: string; network: string; macAddress: string; ipAddress?: string }[];
    conditions: Condition[];
  };
  /** Set when this decision places the VM: the write needs the VM's resourceVersion as precondition. */
  placement?: { host: string; demand: Demand };
  requeueAfterMs?: number;
}

const volumes = (status: "True" | "False", reason: string, message: string): ConditionInput => ({
  type: "VolumesReady",
  status,
  reason,
  message,
});

/** VolumesReady: the root volume exists, and every data volume exists and may be used here. */
export function volumesReadiness(
  input: Pick<
    OrchestrationInput,
    | "vm"
    | "template"
    | "rootVolume"
    | "rootVolumeRefusal"
    | "storageRefusal"
    | "storageUndecided"
    | "dataVolumes"
  >,
): ConditionInput {
  const { vm, template } = input;
  if (!template)
    return volumes("False", "TemplateNotFound", `Template "${vm.spec.template}" does not exist.`);
  if (input.rootVolume === "over-limit")
    return volumes(
      "False",
      "ResourceLimitExceeded",
      `The account's volume limit refused the ROOT volume: ${input.rootVolumeRefusal ?? ""}`,
    );
  if (input.storageRefusal) return volumes("False", "ResourceLimitExceeded", input.storageRefusal);
  if (input.storageUndecided)
    return volumes(
      "False",
      "AwaitingStorageAdmission",
      `The storage controller has not granted volume ${input.storageUndecided} its size yet (the account's primary-storage limit).`,
    );
  if (input.rootVolume === "foreign")
    return volumes(
      "False",
      "RootVolumeNameTaken",
      `Volume "${vm.metadata.name}-root" exists and does not belong to this VM; delete or rename it.`,
    );
  for (const slot of vm.spec.dataVolumes ?? []) {
    const volume = input.dataVolumes.get(slot.volume);
    if (!volume || volume.metadata.deletionTimestamp)
      return volumes(
        "False",
        "VolumeNotFound",
        `Volume "${slot.volume}" ${volume ? "is being deleted" : "does not exist"}.`,
      );
    if (volume.spec.type === "ROOT")
      return volumes("False", "NotADataVolume", `Volume "${slot.volume}" is another VM's root volume.`);
    const holder = volume.status?.attachedTo?.virtualMachine;
    if (holder && holder !== vm.metadata.name)
      return volumes(
        "False",
        "VolumeAttachedElsewhere",
        `Volume "${slot.volume}" is attached to VM ${holder}.`,
      );
    if (volume.spec.zone !== vm.spec.zone)
      return volumes(
        "False",
        "VolumeInOtherZone",
        `Volume "${slot.volume}" is in zone ${volume.spec.zone}, the VM in ${vm.spec.zone}.`,
      );
  }
  return volumes(
    "True",
    "VolumesAvailable",
    `${(vm.spec.dataVolumes ?? []).length} data volume(s) available.`,
  );
}

/**
 * VolumesReady on the VM's (new) host: False while a disk is in a pool that host does not reach.
 * The agent starts the VM only once it is True, so the VM runs on the new host only after the
 * bytes arrived there.
 */
export function volumesOnHost(
  input: Pick<OrchestrationInput, "volumeNeeds" | "moveTargets" | "pools" | "hostNamed">,
  hostName: string | undefined,
  ready: ConditionInput,
): ConditionInput {
  const host = hostName ? input.hostNamed(hostName) : undefined;
  if (ready.status !== "True" || !host) return ready;
  // A disk being copied (also a requested move within reach) is not used until its copy is done:
  // a write made after the copy began would be lost when the old disk is removed.
  const stray =
    unreachableVolume(input.volumeNeeds, host, input.pools) ??
    input.volumeNeeds.find((need) => input.moveTargets.has(need.volume));
  if (!stray) return ready;
  const target = input.moveTargets.get(stray.volume);
  return volumes(
    "False",
    "VolumesMoving",
    `Volume ${stray.volume} is being copied from pool ${stray.pool} to ${target ? `pool ${target}` : `a pool of host ${hostName}`}.`,
  );
}

/** NetworksReady: every NIC's network exists and every NIC that needs an address holds one. */
export function networksReadiness(vm: VirtualMachine, nics: readonly NicAddressing[]): ConditionInput {
  const problems = nics.flatMap((n) => (n.problem ? [n.problem] : []));
  const [first] = problems;
  return first
    ? {
        type: "NetworksReady",
        status: "False",
        reason: first.reason,
        message: problems.map((p) => p.message).join(" "),
      }
    : {
        type: "NetworksReady",
        status: "True",
        reason: "AddressesAllocated",
        message: `${(vm.spec.nics ?? []).length} NIC(s) ready.`,
      };
}

/**
 * The VM needs a host other than its own: that host's agent stopped it and removed its domain for
 * maintenance, or the host was lost and the fabric released the HA VM (its guest is fenced there).
 */
export function isEvacuated(vm: VirtualMachine): boolean {
  return (
    vm.status?.host !== undefined && (vm.status.evacuatedFrom === vm.status.host || isReleasedByFailover(vm))
  );
}

export function decideOrchestration(input: OrchestrationInput): OrchestrationDecision {
  const { vm } = input;
  // The cache will show the volume in a moment and re-queue the VM: one write then, not two.
  if (input.rootVolume === "unconfirmed") return {};
  const volumesReady = volumesReadiness(input);
  const networksReady = networksReadiness(vm, input.nics);
  const addressOf = new Map(input.nics.map((n) => [n.nic, n.problem ? undefined : n.address]));
  const nics = (vm.spec.nics ?? []).map((nic, index) => {
    const ipAddress = addressOf.get(nic.name);
    return {
      name: nic.name,
      network: nic.network,
      macAddress: nicMacAddress(vm, index),
      ...(ipAddress ? { ipAddress } : {}),
    };
  });
  const { scheduled, placement, requeueAfterMs } = decideScheduling(input, volumesReady, networksReady);
  const host = placement?.host ?? vm.status?.host;
  const volumesHere = volumesOnHost(input, host, volumesReady);
  return {
    status: {
      ...(host ? { host } : {}),
      nics,
      conditions: ownConditions(
        vm.status?.conditions as Condition[] | undefined,
        vm.metadata.generation,
        [scheduled, volumesHere, networksReady],
        input.now,
      ),
    },
    ...(placement ? { placement } : {}),
    ...(requeueAfterMs !== undefined ? { requeueAfterMs } : {}),
  };
}

function decideScheduling(
  input: OrchestrationInput,
  volumesReady: ConditionInput,
  networksReady: ConditionInput,
): { scheduled: ConditionInput; placement?: { host: string; demand: Demand }; requeueAfterMs?: number } {
  const { vm } = input;
  const notScheduled = (reason: string, message: string) => ({
    scheduled: { type: "Scheduled", status: "False", reason, message } as ConditionInput,
  });
  const current = vm.status?.host;
  // The guest already runs on the target: binding it there is the only move (before any failover).
  if (current && input.migratedTo && input.migratedTo !== current && input.offering)
    return {
      scheduled: {
        type: "Scheduled",
        status: "True",
        reason: "Migrated",
        message: `live-migrated from ${current} to ${input.migratedTo}`,
      },
      placement: { host: input.migratedTo, demand: HostUsageCache.demandOf(vm, input.offering) },
    };
  if (current && !isEvacuated(vm)) {
    const previous = vm.status?.conditions?.find((c) => c.type === "Scheduled");
    return {
      scheduled:
        previous?.status === "True"
          ? { type: "Scheduled", status: "True", reason: previous.reason, message: previous.message }
          : { type: "Scheduled", status: "True", reason: "Placed", message: `placed on ${current}` },
    };
  }
  if (!current && vm.spec.runStrategy === "Halted")
    return notScheduled("Halted", "runStrategy is Halted: the VM is placed when it is asked to run.");
  const waiting = [volumesReady, networksReady].filter((c) => c.status !== "True");
  if (waiting.length > 0)
    return notScheduled(
      "WaitingForResources",
      `Placed once ${waiting.map((c) => c.type).join(" and ")} ${waiting.length > 1 ? "are" : "is"} True: ${waiting.map((c) => c.message).join(" ")}`,
    );
  const { offering } = input;
  if (!offering)
    return notScheduled(
      "ServiceOfferingNotFound",
      `ServiceOffering "${vm.spec.serviceOffering}" does not exist.`,
    );
  if (input.zone && (input.zone.spec.allocationState ?? "Enabled") !== "Enabled")
    return notScheduled("ZoneDisabled", `Zone ${vm.spec.zone} is disabled: no new VMs are placed in it.`);
  // A disk in a local pool holds the VM to its host; an evacuated VM's disks move with it.
  const volumeHosts = isEvacuated(vm) ? [] : localPoolHosts(input.volumeNeeds, input.pools);
  const affinity = affinityOf(vm, input.affinityGroupType);
  const [missing] = affinity.missing;
  if (missing)
    return {
      ...notScheduled(
        "AffinityGroupNotFound",
        `AffinityGroup "${missing}" does not exist in namespace ${vm.metadata.namespace}: create it or remove it from spec.placement.affinityGroups.`,
      ),
    };
  const demand = HostUsageCache.demandOf(vm, offering, volumeHosts, affinity);
  // A VM taking room for the first time counts against its account's limits; a moving one does not.
  if (!current && (input.accountLimits.cpu !== undefined || input.accountLimits.memoryBytes !== undefined)) {
    const problem = computeLimitProblem(
      vm.metadata.namespace as string,
      input.accountLimits,
      input.accountUsage(),
      demand,
    );
    if (problem) return notScheduled("ResourceLimitExceeded", problem);
  }
  // An evacuated VM goes to another host: the one it left is in maintenance, or lost.
  const leaving = isEvacuated(vm) ? vm.status?.host : undefined;
  const hosts = input.hostUsages().filter((u) => u.host.metadata.name !== leaving);
  const chosen = place(demand, hosts, input.algorithm, {
    volumes: input.volumeNeeds,
    pools: input.poolUsages(),
  });
  if (!chosen.host)
    return { ...notScheduled("Unschedulable", chosen.message), requeueAfterMs: UNSCHEDULABLE_RETRY_MS };
  return {
    scheduled: { type: "Scheduled", status: "True", reason: "Placed", message: chosen.message },
    placement: { host: chosen.host, demand },
  };
}

/** Whether the VM's template gives it a ROOT Volume. */
export function wantsRootVolume(vm: VirtualMachine, template: Template | undefined): boolean {
  return template !== undefined && needsRootVolume(vm, template);
}

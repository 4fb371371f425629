// Pure: an account's resource limits, CloudStack's updateResourceLimit, kept in one Kubernetes
// ResourceQuota per account namespace (`stratus-resource-limits`), so kubectl and the CloudStack
// API set the same thing. Counts of namespaced objects are `count/<plural>.stratus.io` keys, which
// kube-apiserver's quota admission enforces at create time, race-free, whichever front door is
// used. CPU and memory are `stratus.io/` keys no Kubernetes evaluator counts: compute holds a VM
// that would pass them (Scheduled=False ResourceLimitExceeded), deciding placements one at a time.
// Primary storage is one too: the storage component grants volumes their sizes (volume-admission.ts).
import { ApiError, type KubeObject, type ResourceType as KubeResourceType } from "../runtime/client.ts";
import type { ServiceOffering, VirtualMachine } from "./index.ts";
import { parseQuantity } from "./quantity.ts";

export const RESOURCE_LIMITS_QUOTA = "stratus-resource-limits";

export const RESOURCE_QUOTAS: KubeResourceType = {
  group: "",
  version: "v1",
  plural: "resourcequotas",
  kind: "ResourceQuota",
  namespaced: true,
};

export type ResourceQuota = KubeObject & { spec?: { hard?: Record<string, string> } };

/**
 * CloudStack's words for kube-apiserver's quota refusal ("exceeded quota: stratus-resource-limits,
 * requested: count/virtualmachines.stratus.io=1, used: ...=10, limited: ...=10").
 */
export function quotaRefusalText(message: string): string {
  const requested = /requested: ([^=,\s]+)=/.exec(message)?.[1];
  const type = RESOURCE_TYPES.find((t) => t.quotaKey === requested);
  return `Maximum number of resources of type '${type?.name ?? requested ?? "unknown"}' for this account has been exceeded: ${message}`;
}

/** Whether quota admission held a create because kube-controller-manager has not counted a new limit yet. */
export function isQuotaUncounted(error: unknown): boolean {
  return (
    error instanceof ApiError && error.status === 403 && error.message.includes("status unknown for quota")
  );
}

/** Whether kube-apiserver's quota admission refused a create (403 "exceeded quota"). */
export function isQuotaRefusal(error: unknown): boolean {
  return error instanceof ApiError && error.status === 403 && error.message.includes("exceeded quota");
}

export interface ResourceType {
  /** CloudStack's resourcetype number. */
  type: number;
  /** CloudStack's resourcetypename. */
  name: string;
  /** The ResourceQuota key that holds the limit; none: Stratus cannot limit it (yet), and says why. */
  quotaKey?: string;
  /** The binary unit CloudStack counts the type in (memory in MiB, storage in GiB). */
  unit?: "Mi" | "Gi";
  unlimitable?: string;
}

export const CPU_KEY = "stratus.io/cpu";
export const MEMORY_KEY = "stratus.io/memory";
export const PRIMARY_STORAGE_KEY = "stratus.io/primary-storage";

export const RESOURCE_TYPES: readonly ResourceType[] = [
  { type: 0, name: "user_vm", quotaKey: "count/virtualmachines.stratus.io" },
  // Every PublicIPAddress, a network's source-NAT address too, as CloudStack counts them.
  { type: 1, name: "public_ip", quotaKey: "count/publicipaddresses.stratus.io" },
  // ROOT volumes count too, as in CloudStack: a VM whose ROOT volume the limit refuses waits.
  { type: 2, name: "volume", quotaKey: "count/volumes.stratus.io" },
  { type: 3, name: "snapshot", quotaKey: "count/volumesnapshots.stratus.io" },
  { type: 4, name: "template", unlimitable: "accounts register no templates in Stratus (administrators do)" },
  { type: 5, name: "project", unlimitable: "Stratus has no projects" },
  { type: 6, name: "network", quotaKey: "count/networks.stratus.io" },
  { type: 7, name: "vpc", unlimitable: "Stratus has no VPCs" },
  { type: 8, name: "cpu", quotaKey: CPU_KEY },
  { type: 9, name: "memory", quotaKey: MEMORY_KEY, unit: "Mi" },
  // Held by the storage controller, which grants each volume its size before a host makes the disk.
  { type: 10, name: "primary_storage", quotaKey: PRIMARY_STORAGE_KEY, unit: "Gi" },
  { type: 11, name: "secondary_storage", unlimitable: "Stratus does not limit secondary storage yet" },
];

/** The type a CloudStack client names, by number or by resourcetypename. */
export function resourceTypeOf(value: string): ResourceType | undefined {
  return RESOURCE_TYPES.find((t) => String(t.type) === value || t.name === value);
}

const UNIT_BYTES = { Mi: 2n ** 20n, Gi: 2n ** 30n };

/** A limit as the ResourceQuota keeps it, in CloudStack's unit: memory "512Mi", storage "20Gi". */
export function quotaValueOf(type: ResourceType, max: number): string {
  return `${max}${type.unit ?? ""}`;
}

/** An amount in CloudStack's unit of the type (bytes to MiB or GiB, rounded down). */
export function inUnitOf(type: ResourceType, amount: bigint): number {
  return Number(type.unit ? amount / UNIT_BYTES[type.unit] : amount);
}

/** A ResourceQuota's value back as CloudStack's max, in its unit; -1 when there is none. */
export function maxOf(type: ResourceType, hard: Readonly<Record<string, string>> | undefined): number {
  const value = type.quotaKey ? hard?.[type.quotaKey] : undefined;
  return value === undefined ? -1 : inUnitOf(type, parseQuantity(value));
}

/** An account's primary-storage limit in bytes; undefined: none. */
export function storageLimitOf(hard: Readonly<Record<string, string>> | undefined): bigint | undefined {
  const value = hard?.[PRIMARY_STORAGE_KEY];
  return value === undefined ? undefined : parseQuantity(value);
}

/** The CPU and memory limits compute holds VMs to; absent keys are unlimited. */
export interface ComputeLimits {
  cpu?: number;
  memoryBytes?: bigint;
}

export function computeLimitsOf(hard: Readonly<Record<string, string>> | undefined): ComputeLimits {
  const cpu = hard?.[CPU_KEY];
  const memory = hard?.[MEMORY_KEY];
  return {
    ...(cpu !== undefined ? { cpu: Number(parseQuantity(cpu)) } : {}),
    ...(memory !== undefined ? { memoryBytes: parseQuantity(memory) } : {}),
  };
}

export interface ComputeUse {
  cpu: number;
  memoryBytes: bigint;
}

/**
 * The CPUs and memory an account's VMs take: those placed on a host, running or stopped (as
 * CloudStack counts them); a VM that never got a host takes nothing.
 */
export function accountComputeUse(
  vms: Iterable<VirtualMachine>,
  offeringOf: (name: string) => ServiceOffering | undefined,
): ComputeUse {
  const used = { cpu: 0, memoryBytes: 0n };
  for (const vm of vms) {
    if (!vm.status?.host) continue;
    const offering = offeringOf(vm.spec.serviceOffering);
    used.cpu += offering?.spec.cpu ?? 0;
    used.memoryBytes += offering ? parseQuantity(offering.spec.memory) : 0n;
  }
  return used;
}

/**
 * Why a VM asking `demand` may not be placed in an account that already uses `used`, or undefined
 * when it fits its limits. CloudStack's words, with the number to raise.
 */
export function computeLimitProblem(
  account: string,
  limits: ComputeLimits,
  used: ComputeUse,
  demand: ComputeUse,
): string | undefined {
  if (limits.cpu !== undefined && used.cpu + demand.cpu > limits.cpu)
    return `Maximum number of resources of type 'cpu' for account ${account} has been exceeded: ${used.cpu} of ${limits.cpu} CPUs in use, this VM needs ${demand.cpu} (updateResourceLimit resourcetype=8 raises it).`;
  if (limits.memoryBytes !== undefined && used.memoryBytes + demand.memoryBytes > limits.memoryBytes) {
    const mib = (bytes: bigint) => String(bytes / 2n ** 20n);
    return `Maximum number of resources of type 'memory' for account ${account} has been exceeded: ${mib(used.memoryBytes)} of ${mib(limits.memoryBytes)} MiB in use, this VM needs ${mib(demand.memoryBytes)} (updateResourceLimit resourcetype=9 raises it).`;
  }
  return undefined;
}

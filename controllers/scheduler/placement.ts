// Pure: where a VM may run and where it should, as CloudStack's host allocators decide it:
// filters first (each failing host gets one reason), then a weight over the hosts that pass.
import type { Host } from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { choosePools, type PoolUsage, type VolumeNeed } from "../../crds/volume-placement.ts";
import { isHostReady, MAINTENANCE_STATES } from "../fabric/zone-status.ts";

export const ALGORITHMS = ["least-allocated", "first-fit"] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** What a VM needs of a host. */
export interface Demand {
  zone: string;
  cpu: number;
  memoryBytes: bigint;
  hostTags: readonly string[];
  /** `<namespace>/<group>` of each host anti-affinity group: no other member may be on the host. */
  antiAffinityGroups?: readonly string[];
  /** `<namespace>/<group>` of each host affinity group: the host its members are on, if any. */
  affinityGroups?: readonly string[];
  pinnedHost?: string;
  /** Volumes whose disk lives in a host's local pool and may not move: the VM can run only there. */
  volumeHosts?: readonly { volume: string; host: string }[];
}

/** The VM's volumes and the zone's pools: a host fits only if every volume can live where it reaches. */
export interface StorageDemand {
  volumes: readonly VolumeNeed[];
  pools: readonly PoolUsage[];
}

/** A host with what the VMs already placed on it use. */
export interface HostUsage {
  host: Host;
  cpu: number;
  memoryBytes: bigint;
  /** `<namespace>/<group>` of every affinity group (either type) of the VMs on the host. */
  groups: ReadonlySet<string>;
}

export type Placement =
  | { host: string; message: string }
  | { host?: undefined; message: string; reasons: Record<string, number> };

/** Capacity the host may promise: physical capacity times the overcommit ratio. */
export function allocatable(host: Host): { cpu: number; memoryBytes: bigint } {
  const cpu = (host.status?.capacity?.cpu ?? 0) * (host.spec.cpuOvercommitRatio ?? 1);
  const memory = host.status?.capacity?.memory ? parseQuantity(host.status.capacity.memory) : 0n;
  const ratio = host.spec.memoryOvercommitRatio ?? 1;
  // Ratios have at most a few decimals: scale to integers so bigint arithmetic stays exact.
  const memoryBytes = (memory * BigInt(Math.round(ratio * 1000))) / 1000n;
  return { cpu: Math.floor(cpu), memoryBytes };
}

export const AFFINITY_REASON = "not the host of its affinity group";

/**
 * The VM's host affinity groups that already have a member on some host: the VM may go only there.
 * Read across all hosts, not one, so place() computes it once.
 */
export function anchoredGroups(
  demand: Demand,
  hosts: readonly Pick<HostUsage, "groups">[],
): ReadonlySet<string> {
  const wanted = demand.affinityGroups ?? [];
  return new Set(wanted.filter((group) => hosts.some((usage) => usage.groups.has(group))));
}

/** Why the VM's groups keep it off a host whose VMs are in `groups`, or undefined. */
export function affinityReason(
  demand: Demand,
  groups: ReadonlySet<string>,
  anchored: ReadonlySet<string>,
): string | undefined {
  if (demand.antiAffinityGroups?.some((group) => groups.has(group))) return "anti-affinity";
  for (const group of anchored) if (!groups.has(group)) return AFFINITY_REASON;
  return undefined;
}

/** Why the host cannot take the VM, or undefined when it can. */
export function unfitReason(
  demand: Demand,
  usage: HostUsage,
  storage?: StorageDemand,
  anchored: ReadonlySet<string> = new Set(),
): string | undefined {
  const { host } = usage;
  if (demand.pinnedHost && host.metadata.name !== demand.pinnedHost) return "not the pinned host";
  const elsewhere = demand.volumeHosts?.find((v) => v.host !== host.metadata.name);
  if (elsewhere) return `volume ${elsewhere.volume} is on host ${elsewhere.host}`;
  if (!isHostReady(host)) return "not ready";
  if (host.spec.maintenance || MAINTENANCE_STATES.has(host.status?.resourceState ?? ""))
    return "in maintenance";
  if ((host.spec.allocationState ?? "Enabled") !== "Enabled") return "disabled";
  if (host.spec.degraded) return "declared degraded";
  const tags = new Set(host.spec.tags ?? []);
  if (demand.hostTags.some((tag) => !tags.has(tag))) return "missing host tags";
  const affinity = affinityReason(demand, usage.groups, anchored);
  if (affinity) return affinity;
  const capacity = allocatable(host);
  if (usage.cpu + demand.cpu > capacity.cpu) return "insufficient CPU";
  if (usage.memoryBytes + demand.memoryBytes > capacity.memoryBytes) return "insufficient memory";
  if (storage && storage.volumes.length > 0) {
    const pools = choosePools(storage.volumes, host, storage.pools);
    if ("reason" in pools) return pools.reason;
  }
  return undefined;
}

/** Free share of the host after placing the VM, averaged over CPU and memory (0..1). */
function freeShareAfter(demand: Demand, usage: HostUsage): number {
  const capacity = allocatable(usage.host);
  const cpuFree = capacity.cpu > 0 ? (capacity.cpu - usage.cpu - demand.cpu) / capacity.cpu : 0;
  const memoryFree =
    capacity.memoryBytes > 0n
      ? Number(capacity.memoryBytes - usage.memoryBytes - demand.memoryBytes) / Number(capacity.memoryBytes)
      : 0;
  return (cpuFree + memoryFree) / 2;
}

/**
 * The host for the VM among the zone's hosts. least-allocated spreads (the most free share after
 * placement wins); first-fit packs (the first host by name that fits), as CloudStack's allocators.
 */
export function place(
  demand: Demand,
  hosts: readonly HostUsage[],
  algorithm: Algorithm,
  storage?: StorageDemand,
): Placement {
  const inZone = hosts.filter((usage) => usage.host.spec.zone === demand.zone);
  if (inZone.length === 0) return { message: `no hosts in zone ${demand.zone}`, reasons: {} };
  const reasons: Record<string, number> = {};
  const fitting: HostUsage[] = [];
  const anchored = anchoredGroups(demand, hosts);
  for (const usage of inZone) {
    const reason = unfitReason(demand, usage, storage, anchored);
    if (reason) reasons[reason] = (reasons[reason] ?? 0) + 1;
    else fitting.push(usage);
  }
  const byName = (a: HostUsage, b: HostUsage) =>
    (a.host.metadata.name as string).localeCompare(b.host.metadata.name as string);
  const ranked =
    algorithm === "first-fit"
      ? fitting.sort(byName)
      : fitting.sort((a, b) => freeShareAfter(demand, b) - freeShareAfter(demand, a) || byName(a, b));
  const chosen = ranked[0];
  if (chosen) {
    const name = chosen.host.metadata.name as string;
    return { host: name, message: `placed on ${name} (${fitting.length}/${inZone.length} hosts fit)` };
  }
  const summary = Object.entries(reasons)
    .sort(([a, x], [b, y]) => y - x || a.localeCompare(b))
    .map(([reason, count]) => `${count} ${reason}`)
    .join(", ");
  return { message: `0/${inZone.length} hosts: ${summary}`, reasons };
}

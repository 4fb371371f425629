// Pure: the StoragePool roll-up (capacity from the hosts' agents, allocation from the volumes, how
// many hosts reach it) and the local pool the storage controller makes for each host.
import type { Host, StoragePool, Volume } from "../../crds/index.ts";
import { localPoolName } from "../../crds/kinds/storage-pool.ts";
import { formatQuantity, parseQuantity } from "../../crds/quantity.ts";
import { hostPoolReport, poolAllocations } from "../../crds/volume-placement.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { isHostReady } from "../fabric/zone-status.ts";

/** The local pool of a host: made once, owned by the Host so it goes with it. */
export function localPoolFor(host: Host): Pick<StoragePool, "metadata" | "spec"> {
  const name = host.metadata.name as string;
  return {
    metadata: { name: localPoolName(name), labels: { "stratus.io/host": name } },
    spec: { zone: host.spec.zone, type: "local", host: name },
  };
}

/** The hosts that should reach the pool: a local pool's host, or every host of a shared pool's zone. */
export function poolHosts(pool: StoragePool, zoneHosts: readonly Host[]): Host[] {
  return zoneHosts.filter(
    (h) =>
      h.spec.zone === pool.spec.zone && (pool.spec.type !== "local" || h.metadata.name === pool.spec.host),
  );
}

const MAX_LISTED = 5;
const listed = (names: readonly string[]) =>
  names.length > MAX_LISTED
    ? `${names.slice(0, MAX_LISTED).join(", ")} and ${names.length - MAX_LISTED} more`
    : names.join(", ");

export function desiredPoolStatus(
  pool: StoragePool,
  zoneHosts: readonly Host[],
  volumesInPool: readonly Volume[],
  sizeOf: (volume: Volume) => bigint,
  now: Date = new Date(),
): Record<string, unknown> {
  const name = pool.metadata.name as string;
  const hosts = poolHosts(pool, zoneHosts);
  const usable = (h: Host) => isHostReady(h) && hostPoolReport(h, name)?.ready === true;
  const reports = hosts.filter(usable).flatMap((h) => hostPoolReport(h, name) ?? []);
  const notReady = hosts
    .filter((h) => !usable(h))
    .map((h) => {
      const why = isHostReady(h) ? (hostPoolReport(h, name)?.message ?? "not reported") : "host not ready";
      return `${h.metadata.name} (${why})`;
    });
  // A shared pool is as large and as free as the host that sees the least of it says.
  const least = (field: "capacity" | "available") =>
    reports
      .flatMap((r) => (r[field] ? [parseQuantity(r[field])] : []))
      .reduce<bigint | undefined>((min, q) => (min === undefined || q < min ? q : min), undefined);
  const capacity = least("capacity");
  const available = least("available");
  const holding = volumesInPool.filter((v) => v.status?.pool === name);
  const ready: ConditionInput =
    hosts.length === 0
      ? {
          type: "Ready",
          status: "False",
          reason: "NoHosts",
          message: `No host of zone ${pool.spec.zone} reaches the pool.`,
        }
      : notReady.length === 0
        ? {
            type: "Ready",
            status: "True",
            reason: "Reachable",
            message: `All ${hosts.length} host(s) reach the pool.`,
          }
        : {
            type: "Ready",
            status: "False",
            reason: "NotReachable",
            message: `${notReady.length}/${hosts.length} host(s) cannot use the pool: ${listed(notReady)}.`,
          };
  const inputs: ConditionInput[] = [ready];
  if (pool.metadata.deletionTimestamp && holding.length > 0)
    inputs.push({
      type: "DeletionBlocked",
      status: "True",
      reason: "VolumesInPool",
      message: `${holding.length} volume(s) are still in the pool: ${listed(holding.map((v) => `${v.metadata.namespace}/${v.metadata.name}`))}; delete or move them first.`,
    });
  return {
    ...(pool.metadata.generation !== undefined ? { observedGeneration: pool.metadata.generation } : {}),
    ...(capacity !== undefined ? { capacity: formatQuantity(capacity) } : {}),
    ...(available !== undefined ? { available: formatQuantity(available) } : {}),
    allocated: formatQuantity(poolAllocations(volumesInPool, sizeOf).get(name) ?? 0n),
    volumes: holding.length,
    hosts: { total: hosts.length, ready: reports.length },
    conditions: ownConditions(
      pool.status?.conditions as Condition[] | undefined,
      pool.metadata.generation,
      inputs,
      now,
    ),
  };
}

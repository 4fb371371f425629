// Pure: which StoragePool a volume lives in when its VM runs on a given host. The scheduler uses it
// to place VMs only where their volumes can live, the storage controller to choose where a disk
// moves, and the host agent to choose the pool of a new disk: one rule, three readers.
import type { DiskOffering, Host, ServiceOffering, StoragePool, StorageType, Volume } from "./index.ts";
import { isSharedPoolType } from "./kinds/storage-pool.ts";
import { parseQuantity } from "./quantity.ts";

/** What one volume asks of its pool. */
export interface VolumeNeed {
  volume: string;
  sizeBytes: bigint;
  storageType?: StorageType;
  tags: readonly string[];
  /** The pool the disk is in now; undefined while no disk exists. */
  pool?: string;
}

/** A pool with what its volumes already take (the caller counts it: cache or roll-up). */
export interface PoolUsage {
  pool: StoragePool;
  allocatedBytes: bigint;
}

export type PoolChoice = { pool: string; moves: boolean } | { pool?: undefined; reason: string };

/** Whether the host can use the pool at all: its zone's shared pools, or its own local pool. */
export function reaches(pool: StoragePool, host: Host): boolean {
  if (pool.spec.zone !== host.spec.zone) return false;
  return pool.spec.type === "local" ? pool.spec.host === host.metadata.name : true;
}

/** The host's agent reports the pool usable, and what it sees of it. */
export function hostPoolReport(host: Host, pool: string) {
  return host.status?.storagePools?.find((p) => p.name === pool);
}

/** Capacity of the pool: the host's own report, else the controller's roll-up. */
function capacityOf(usage: PoolUsage, host: Host): bigint | undefined {
  const reported =
    hostPoolReport(host, usage.pool.metadata.name as string)?.capacity ?? usage.pool.status?.capacity;
  return reported ? parseQuantity(reported) : undefined;
}

/** Why a new disk for `need` cannot go into the pool from this host, or undefined when it can. */
function unfitPool(need: VolumeNeed, usage: PoolUsage, host: Host, extraBytes: bigint): string | undefined {
  const { pool } = usage;
  const name = pool.metadata.name as string;
  if (pool.metadata.deletionTimestamp) return `pool ${name} is being deleted`;
  if (pool.spec.maintenance) return `pool ${name} is in maintenance`;
  const shared = isSharedPoolType(pool.spec.type);
  if (need.storageType === "local" && shared) return `pool ${name} is shared, the offering asks for local`;
  if (need.storageType === "shared" && !shared) return `pool ${name} is local, the offering asks for shared`;
  const tags = new Set(pool.spec.tags ?? []);
  const missing = need.tags.filter((t) => !tags.has(t));
  if (missing.length > 0) return `pool ${name} lacks storage tags ${missing.join(",")}`;
  if (!hostPoolReport(host, name)?.ready) return `pool ${name} is not ready on host ${host.metadata.name}`;
  const capacity = capacityOf(usage, host);
  if (capacity === undefined) return `pool ${name} has not reported its size`;
  if (usage.allocatedBytes + extraBytes + need.sizeBytes > capacity)
    return `pool ${name} has too little room`;
  return undefined;
}

/**
 * The pool for each volume when the VM runs on `host`. A disk stays where it is when the host
 * reaches that pool; otherwise (a new disk, or one that must move) it goes to the fitting pool with
 * the most room: shared pools before local ones when the offering does not say, as CloudStack.
 */
export function choosePools(
  needs: readonly VolumeNeed[],
  host: Host,
  pools: readonly PoolUsage[],
): { choices: Map<string, { pool: string; moves: boolean }> } | { reason: string } {
  const reachable = pools.filter((p) => reaches(p.pool, host));
  const added = new Map<string, bigint>();
  const choices = new Map<string, { pool: string; moves: boolean }>();
  for (const need of needs) {
    const current = need.pool ? reachable.find((p) => p.pool.metadata.name === need.pool) : undefined;
    if (current) {
      choices.set(need.volume, { pool: need.pool as string, moves: false });
      continue;
    }
    const reasons: string[] = [];
    const fitting = reachable.filter((usage) => {
      const reason = unfitPool(need, usage, host, added.get(usage.pool.metadata.name as string) ?? 0n);
      if (reason) reasons.push(reason);
      return reason === undefined;
    });
    const room = (u: PoolUsage) =>
      (capacityOf(u, host) ?? 0n) - u.allocatedBytes - (added.get(u.pool.metadata.name as string) ?? 0n);
    fitting.sort((a, b) => {
      const shared = Number(isSharedPoolType(b.pool.spec.type)) - Number(isSharedPoolType(a.pool.spec.type));
      if (shared !== 0) return shared;
      const diff = room(b) - room(a);
      if (diff !== 0n) return diff > 0n ? 1 : -1;
      return (a.pool.metadata.name as string).localeCompare(b.pool.metadata.name as string);
    });
    const chosen = fitting[0];
    if (!chosen) {
      const why =
        reasons.length > 0 ? reasons.join("; ") : `no storage pool in zone ${host.spec.zone} reaches it`;
      return {
        reason: need.pool
          ? `volume ${need.volume} cannot move from pool ${need.pool}: ${why}`
          : `volume ${need.volume}: ${why}`,
      };
    }
    const name = chosen.pool.metadata.name as string;
    added.set(name, (added.get(name) ?? 0n) + need.sizeBytes);
    choices.set(need.volume, { pool: name, moves: need.pool !== undefined });
  }
  return { choices };
}

/** The first volume whose pool the host does not reach (it must move before the VM runs there). */
export function unreachableVolume(
  needs: readonly VolumeNeed[],
  host: Host,
  pools: readonly StoragePool[],
): VolumeNeed | undefined {
  return needs.find((need) => {
    if (!need.pool) return false;
    const pool = pools.find((p) => p.metadata.name === need.pool);
    return !pool || !reaches(pool, host);
  });
}

/** What the volume asks of its pool, from its own size and the offerings that made it. */
export function volumeNeed(
  volume: Volume,
  offerings: { disk?: DiskOffering | undefined; service?: ServiceOffering | undefined },
): VolumeNeed {
  const size = volume.spec.size ?? offerings.disk?.spec.size;
  const root = volume.spec.type === "ROOT";
  const storageType =
    (root ? offerings.service?.spec.storageType : undefined) ?? offerings.disk?.spec.storageType;
  return {
    volume: volume.metadata.name as string,
    sizeBytes: volume.status?.capacity
      ? parseQuantity(volume.status.capacity)
      : size
        ? parseQuantity(size)
        : 0n,
    ...(storageType ? { storageType } : {}),
    tags: [
      ...(root ? (offerings.service?.spec.storageTags ?? []) : []),
      ...(offerings.disk?.spec.tags ?? []),
    ],
    ...(volume.status?.pool ? { pool: volume.status.pool } : {}),
  };
}

/** What the volumes take of each pool: where their disk is, and where a move reserves room. */
export function poolAllocations(
  volumes: Iterable<Volume>,
  sizeOf: (volume: Volume) => bigint,
): Map<string, bigint> {
  const allocated = new Map<string, bigint>();
  const add = (pool: string | undefined, bytes: bigint) => {
    if (pool) allocated.set(pool, (allocated.get(pool) ?? 0n) + bytes);
  };
  for (const volume of volumes) {
    const bytes = sizeOf(volume);
    add(volume.status?.pool, bytes);
    const target = volume.status?.transfer?.target?.pool;
    if (target && target !== volume.status?.pool) add(target, bytes);
  }
  return allocated;
}

/**
 * The hosts the disks hold a VM to: a disk in a local pool is reachable from its host alone. Only
 * an evacuated VM's disks may move (its host stopped it, so the copy is consistent); the caller
 * asks this only for VMs that are not evacuated.
 */
export function localPoolHosts(
  needs: readonly VolumeNeed[],
  pools: readonly StoragePool[],
): { volume: string; host: string }[] {
  return needs.flatMap((need) => {
    const pool = need.pool ? pools.find((p) => p.metadata.name === need.pool) : undefined;
    return pool?.spec.type === "local" && pool.spec.host
      ? [{ volume: need.volume, host: pool.spec.host }]
      : [];
  });
}

// Pure: a StoragePool as CloudStack's listStoragePools shows primary storage
// (StoragePoolJoinDaoImpl.newStoragePoolResponse): scope HOST for a host's local pool, ZONE for a
// shared one; sizes in bytes as int64.
import type { PoolType, StoragePool } from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import { compact, formatDate, type Json } from "./envelope.ts";
import type { Catalog } from "./views.ts";

/** CloudStack's StoragePoolType names. */
const POOL_TYPE_NAMES: Record<PoolType, string> = {
  local: "Filesystem",
  sharedMountPoint: "SharedMountPoint",
  nfs: "NetworkFilesystem",
};

export const poolScope = (pool: StoragePool): "HOST" | "ZONE" =>
  pool.spec.type === "local" ? "HOST" : "ZONE";

/**
 * CloudStack's StoragePoolStatus: Maintenance while no new volumes may go in, Up once the storage
 * controller reports every host reaches it, Initialized until then (or while a host does not).
 */
export function poolState(pool: StoragePool): string {
  if (pool.metadata.deletionTimestamp) return "Removed";
  if (pool.spec.maintenance) return "Maintenance";
  const ready = pool.status?.conditions?.find((c) => c.type === "Ready");
  return ready?.status === "True" ? "Up" : "Initialized";
}

/** Where the pool is, as CloudStack names it: an NFS pool's export, else its path on the hosts. */
export const poolPath = (pool: StoragePool): string | undefined =>
  pool.spec.nfs?.exportPath ?? pool.spec.path;

const bytes = (quantity: string | undefined) => (quantity ? Number(parseQuantity(quantity)) : undefined);

export function storagePoolView(pool: StoragePool, catalog: Pick<Catalog, "zone">): Json {
  const zone = catalog.zone(pool.spec.zone);
  const total = bytes(pool.status?.capacity);
  const available = bytes(pool.status?.available);
  return compact({
    id: pool.metadata.uid as string,
    name: pool.metadata.name as string,
    zoneid: zone?.metadata.uid,
    zonename: pool.spec.zone,
    type: POOL_TYPE_NAMES[pool.spec.type],
    scope: poolScope(pool),
    path: poolPath(pool),
    ipaddress: pool.spec.nfs?.server,
    state: poolState(pool),
    hypervisor: "KVM",
    provider: "DefaultPrimary",
    disksizetotal: total,
    disksizeallocated: bytes(pool.status?.allocated) ?? 0,
    disksizeused: total !== undefined && available !== undefined ? total - available : undefined,
    tags: pool.spec.tags?.length ? pool.spec.tags.join(",") : undefined,
    istagarule: false,
    created: formatDate(pool.metadata.creationTimestamp),
  });
}

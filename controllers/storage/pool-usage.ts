// What the pools already hold and what a VM's volumes ask of them, from the informer caches: the
// inputs of choosePools for compute (placement) and storage (where a disk moves).
import type { DiskOffering, ServiceOffering, StoragePool, Volume } from "../../crds/index.ts";
import { type PoolUsage, poolAllocations, type VolumeNeed, volumeNeed } from "../../crds/volume-placement.ts";

/** Volumes by the pools they take room in: where the disk is, and where a move reserves room. */
export const VOLUMES_BY_POOL = {
  pool: (volume: Volume) => [
    ...new Set([volume.status?.pool, volume.status?.transfer?.target?.pool].filter((p) => p !== undefined)),
  ],
};

/** Pools by zone, for the pools a host of the zone may reach. */
export const POOLS_BY_ZONE = { zone: (pool: StoragePool) => [pool.spec.zone] };

export type DiskOfferingOf = (name: string | undefined) => DiskOffering | undefined;

/** The need of a volume: a ROOT volume's offering is its VM's service offering. */
export function needOf(volume: Volume, diskOffering: DiskOfferingOf, service?: ServiceOffering): VolumeNeed {
  return volumeNeed(volume, { disk: diskOffering(volume.spec.diskOffering), service });
}

/**
 * The pools with what their volumes take; `volumesIn` gives a pool's volumes (VOLUMES_BY_POOL).
 * `except` leaves out the volumes being decided, so their own reservation is not counted twice.
 */
export function poolUsages(
  pools: readonly StoragePool[],
  volumesIn: (pool: string) => readonly Volume[],
  diskOffering: DiskOfferingOf,
  except: ReadonlySet<string> = new Set(),
): PoolUsage[] {
  const sizeOf = (volume: Volume) => needOf(volume, diskOffering).sizeBytes;
  return pools.map((pool) => {
    const name = pool.metadata.name as string;
    const volumes = volumesIn(name).filter((v) => !except.has(`${v.metadata.namespace}/${v.metadata.name}`));
    return { pool, allocatedBytes: poolAllocations(volumes, sizeOf).get(name) ?? 0n };
  });
}

/** The VM that uses a ROOT volume: its owner. */
export function rootVolumeOwner(volume: Volume): string | undefined {
  const owner = volume.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine");
  return owner ? `${volume.metadata.namespace}/${owner.name}` : undefined;
}

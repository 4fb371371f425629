// Pure: what an account's primary-storage limit (CloudStack's resource type 10) granted a volume.
// In an account with a limit, the storage controller grants sizes one account at a time
// (controllers/storage/volume-admission.ts) and writes them to status.admittedSize; a host makes or
// grows a disk only up to that, and compute places no VM before its volumes have it. An account
// without one pays nothing: its volumes carry no grant and nothing waits for one (a volume that
// was decided once, under a limit since lifted, keeps being decided). The API counts the grants.
// A disk that exists holds its size whatever was granted: a limit never takes bytes back.
import type { DiskOffering, Volume } from "./index.ts";
import { formatQuantity, parseQuantity } from "./quantity.ts";

export const ADMITTED_CONDITION = "Admitted";

/** The bytes a volume asks for: its size, else its disk offering's. */
export function requestedBytes(volume: Volume, diskOffering: DiskOffering | undefined): bigint {
  const size = volume.spec.size ?? diskOffering?.spec.size;
  return size ? parseQuantity(size) : 0n;
}

/** The bytes a volume holds against its account's limit: what was granted, or its disk when larger. */
export function grantedBytes(volume: Volume): bigint {
  const granted = volume.status?.admittedSize ? parseQuantity(volume.status.admittedSize) : 0n;
  const disk = volume.status?.capacity ? parseQuantity(volume.status.capacity) : 0n;
  return granted > disk ? granted : disk;
}

/** What an account's volumes hold of its primary storage. */
export function accountStorageBytes(volumes: Iterable<Volume>): bigint {
  let used = 0n;
  for (const volume of volumes) used += grantedBytes(volume);
  return used;
}

/** Whether the volume's size must be granted before a disk is made or grown for it. */
export function needsGrant(volume: Volume, accountLimited: boolean): boolean {
  return accountLimited || volume.status?.conditions?.some((c) => c.type === ADMITTED_CONDITION) === true;
}

/** Why a host may not make the volume's disk of `bytes` yet; undefined when it may. */
export function admissionWait(volume: Volume, bytes: bigint, accountLimited: boolean): string | undefined {
  if (!needsGrant(volume, accountLimited) || grantedBytes(volume) >= bytes) return undefined;
  const refused = volume.status?.conditions?.find(
    (c) => c.type === ADMITTED_CONDITION && c.status === "False",
  );
  return (
    refused?.message ??
    `Volume "${volume.metadata.name}" waits for the storage controller to admit ${formatQuantity(bytes)} against its account's primary-storage limit.`
  );
}

/** The size a host may grow an existing disk to: what is asked, within what was granted. */
export function growableBytes(volume: Volume, asked: bigint, accountLimited: boolean): bigint {
  if (!needsGrant(volume, accountLimited)) return asked;
  const granted = grantedBytes(volume);
  return asked < granted ? asked : granted;
}

// Pure: VolumeSnapshots and SnapshotPolicies as CloudStack shows snapshots (SnapshotResponse) and
// snapshot policies (SnapshotPolicyResponse); sizes in bytes as int64, the policy's interval as
// its ordinal, as cloudstack-go's structs expect.
import {
  SNAPSHOT_POLICY_LABEL,
  type SnapshotInterval,
  type SnapshotPolicy,
  type Volume,
  type VolumeSnapshot,
} from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import { compact, formatDate, type Json } from "./envelope.ts";
import { intervalOrdinal } from "./snapshot-input.ts";
import { type Catalog, tagsView } from "./views.ts";

/** What a snapshot's view looks up: its zone, its volume and the policy that took it. */
export interface SnapshotCatalog extends Pick<Catalog, "zone"> {
  volume(namespace: string, name: string): Volume | undefined;
  snapshotPolicy(namespace: string, name: string): SnapshotPolicy | undefined;
}

/**
 * CloudStack's Snapshot.State: Ready is BackedUp (the copy is on secondary storage and
 * checksummed); Pending, Creating or no phase yet is Creating (Stratus copies straight to
 * secondary storage, so there is no separate BackingUp); Deleting or being deleted is Destroying.
 */
export function snapshotState(snapshot: VolumeSnapshot): string {
  if (snapshot.metadata.deletionTimestamp || snapshot.status?.phase === "Deleting") return "Destroying";
  switch (snapshot.status?.phase) {
    case "Ready":
      return "BackedUp";
    case "Error":
      return "Error";
    default:
      return "Creating";
  }
}

/** Why a snapshot failed: its Ready condition's message. */
export function snapshotFailure(snapshot: VolumeSnapshot): string {
  const ready = snapshot.status?.conditions?.find((c) => c.type === "Ready");
  return ready?.message || `snapshot ${snapshot.metadata.name} failed`;
}

/** The policy that took a recurring snapshot (its label), if the snapshot is one. */
export const snapshotPolicyName = (snapshot: VolumeSnapshot): string | undefined =>
  snapshot.metadata.labels?.[SNAPSHOT_POLICY_LABEL];

/** MANUAL or RECURRING, and the interval: the policy's for a recurring one, MANUAL otherwise. */
export function snapshotType(
  snapshot: VolumeSnapshot,
  catalog: Pick<SnapshotCatalog, "snapshotPolicy">,
): { snapshottype: "MANUAL" | "RECURRING"; intervaltype: SnapshotInterval | "MANUAL" | undefined } {
  const policyName = snapshotPolicyName(snapshot);
  if (!policyName) return { snapshottype: "MANUAL", intervaltype: "MANUAL" };
  const policy = catalog.snapshotPolicy(snapshot.metadata.namespace as string, policyName);
  return { snapshottype: "RECURRING", intervaltype: policy?.spec.intervalType };
}

const bytes = (quantity: string | undefined) => (quantity ? Number(parseQuantity(quantity)) : undefined);

export function snapshotView(snapshot: VolumeSnapshot, catalog: SnapshotCatalog): Json {
  const namespace = snapshot.metadata.namespace as string;
  const volume = catalog.volume(namespace, snapshot.spec.volume);
  const zoneName = snapshot.status?.zone ?? volume?.spec.zone;
  const zone = zoneName ? catalog.zone(zoneName) : undefined;
  const state = snapshotState(snapshot);
  return compact({
    id: snapshot.metadata.uid as string,
    name: snapshot.metadata.name as string,
    account: namespace,
    domain: "ROOT",
    volumeid: volume?.metadata.uid,
    volumename: snapshot.spec.volume,
    volumetype: snapshot.status?.volumeType ?? volume?.spec.type ?? "DATADISK",
    ...snapshotType(snapshot, catalog),
    state,
    created: formatDate(snapshot.status?.takenAt ?? snapshot.metadata.creationTimestamp),
    physicalsize: bytes(snapshot.status?.size),
    virtualsize: bytes(snapshot.status?.virtualSize),
    zoneid: zone?.metadata.uid,
    zonename: zoneName,
    locationtype: "SECONDARY",
    revertable: state === "BackedUp",
    hasannotations: false,
    tags: tagsView(snapshot, "Snapshot"),
  });
}

/** updateSnapshotPolicy's fordisplay=false, kept on the policy (CloudStack's display flag). */
export const FOR_DISPLAY_ANNOTATION = "stratus.io/for-display";

export function snapshotPolicyView(policy: SnapshotPolicy, catalog: Pick<SnapshotCatalog, "volume">): Json {
  const volume = catalog.volume(policy.metadata.namespace as string, policy.spec.volume);
  return compact({
    id: policy.metadata.uid as string,
    volumeid: volume?.metadata.uid,
    schedule: policy.spec.schedule,
    intervaltype: intervalOrdinal(policy.spec.intervalType),
    maxsnaps: policy.spec.maxSnapshots,
    timezone: policy.spec.timezone ?? "UTC",
    fordisplay: policy.metadata.annotations?.[FOR_DISPLAY_ANNOTATION] !== "false",
    hasannotations: false,
    tags: tagsView(policy, "SnapshotPolicy"),
  });
}

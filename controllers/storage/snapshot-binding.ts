// Pure: which host takes a VolumeSnapshot. The agent of the host holding the volume's disk copies
// it, so storage binds the snapshot to the volume's status.host once, when the disk exists and is
// not being moved; a bound snapshot is never bound again. The agent owns everything else.
import type { Volume, VolumeSnapshot } from "../../crds/index.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { statusSays } from "../../runtime/objects.ts";

export type SnapshotBindingStatus = {
  host?: string;
  zone?: string;
  volumeType?: "ROOT" | "DATADISK";
  conditions: Condition[];
};

export type SnapshotBindingDecision =
  /** Deleted before any host took it: no file exists, so storage releases it. */
  | { action: "release" }
  /** Apply this status (storage's whole share); `bind` when it names the host. */
  | { action: "write"; status: SnapshotBindingStatus; bind: boolean }
  | { action: "none" };

/** Why the snapshot cannot be bound yet, or undefined when it can. */
function notBindable(snapshot: VolumeSnapshot, volume: Volume | undefined): ConditionInput | undefined {
  const name = snapshot.spec.volume;
  const bound = (reason: string, message: string): ConditionInput => ({
    type: "Bound",
    status: "False",
    reason,
    message,
  });
  if (!volume) return bound("VolumeNotFound", `Volume ${name} does not exist in this namespace.`);
  if (volume.metadata.deletionTimestamp)
    return bound("VolumeDeleting", `Volume ${name} is being deleted; its disk cannot be copied.`);
  if (!volume.status?.host || !volume.status.pool)
    return bound("NoDiskYet", `Volume ${name} has no disk yet; waiting for a host to create it.`);
  const target = volume.status.transfer?.target;
  if (target)
    return bound(
      "VolumeMoving",
      `Volume ${name} is being moved to pool ${target.pool} on host ${target.host}; waiting until it arrived.`,
    );
  return undefined;
}

export function decideSnapshotBinding(
  snapshot: VolumeSnapshot,
  volume: Volume | undefined,
  now?: Date,
): SnapshotBindingDecision {
  const bound = snapshot.status?.host !== undefined;
  if (snapshot.metadata.deletionTimestamp) return bound ? { action: "none" } : { action: "release" };
  if (bound) return { action: "none" };
  const problem = notBindable(snapshot, volume);
  const condition: ConditionInput = problem ?? {
    type: "Bound",
    status: "True",
    reason: "Bound",
    message: `Host ${volume?.status?.host} holds the disk of volume ${snapshot.spec.volume} and takes the snapshot.`,
  };
  const current = (snapshot.status?.conditions ?? []) as Condition[];
  const conditions = ownConditions(current, snapshot.metadata.generation, [condition], now);
  const status: SnapshotBindingStatus =
    problem || !volume?.status?.host
      ? { conditions }
      : {
          host: volume.status.host,
          zone: volume.spec.zone,
          volumeType: volume.spec.type ?? "DATADISK",
          conditions,
        };
  if (statusSays(status, (snapshot.status ?? {}) as Record<string, unknown>)) return { action: "none" };
  return { action: "write", status, bind: status.host !== undefined };
}

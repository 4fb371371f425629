// Storage's share of snapshots: binding each VolumeSnapshot to the host whose agent takes it
// (snapshot-binding.ts), releasing one deleted before any host took it, and running the
// SnapshotPolicies (snapshot-policy.ts): one snapshot per slot, the newest maxSnapshots kept.

import { SNAPSHOT_DATA_FINALIZER } from "../../crds/finalizers.ts";
import {
  Resources,
  SNAPSHOT_POLICY_LABEL,
  type SnapshotPolicy,
  type Volume,
  type VolumeSnapshot,
} from "../../crds/index.ts";
import {
  isAlreadyExists,
  isConflict,
  isNotFound,
  type KubeObject,
  objectKey,
  type ResourceType,
} from "../../runtime/client.ts";
import type { ComponentContext } from "../../runtime/component.ts";
import type { Condition } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import type { Informer } from "../../runtime/informer.ts";
import { applyStatus, notWrittenIfGone, removeFinalizer } from "../../runtime/objects.ts";
import { decideSnapshotBinding } from "./snapshot-binding.ts";
import { decideSnapshotPolicy } from "./snapshot-policy.ts";

/** The key of the Volume a snapshot or policy of the same namespace names. */
const volumeKeyOf = (object: VolumeSnapshot | SnapshotPolicy) =>
  `${object.metadata.namespace}/${object.spec.volume}`;

const policyKeyOf = (snapshot: VolumeSnapshot) => {
  const policy = snapshot.metadata.labels?.[SNAPSHOT_POLICY_LABEL];
  return policy ? [`${snapshot.metadata.namespace}/${policy}`] : [];
};

export function snapshotControllers(
  { client, informers, metrics, logger, events, fieldManager }: ComponentContext,
  volumes: Informer<Volume>,
): Controller[] {
  const snapshots = informers.for<VolumeSnapshot>(Resources.volumeSnapshots, {
    indexers: { volume: (s) => [volumeKeyOf(s)], policy: policyKeyOf },
  });
  const policies = informers.for<SnapshotPolicy>(Resources.snapshotPolicies, {
    indexers: { volume: (p) => [volumeKeyOf(p)] },
  });

  /** An Event when a condition the user can act on turns False for a new reason. */
  async function reportProblem(
    type: ResourceType,
    object: KubeObject & { status?: { conditions?: readonly Condition[] } },
    condition: Condition | undefined,
    action: string,
  ) {
    if (condition?.status !== "False") return;
    const before = object.status?.conditions?.find((c) => c.type === condition.type);
    if (before?.status === "False" && before.reason === condition.reason) return;
    await events.record(type, object, {
      type: "Warning",
      reason: condition.reason,
      action,
      note: condition.message,
    });
  }

  const binding = new Controller({
    name: "storage-snapshots",
    logger,
    metrics,
    async reconcile(key, log) {
      const snapshot = snapshots.get(key);
      if (!snapshot) return undefined;
      const decision = decideSnapshotBinding(snapshot, volumes.get(volumeKeyOf(snapshot)));
      if (decision.action === "release") {
        if (
          await removeFinalizer(client, Resources.volumeSnapshots, snapshot, SNAPSHOT_DATA_FINALIZER).catch(
            notWrittenIfGone,
          )
        )
          log.info("no host took the snapshot; released it");
        return undefined;
      }
      if (decision.action === "none") return undefined;
      const { name, namespace, resourceVersion } = snapshot.metadata;
      try {
        await client.apply(
          Resources.volumeSnapshots,
          {
            metadata: {
              name: name as string,
              namespace: namespace as string,
              // Bound from what the snapshot was: never to a second host by a stale cache.
              ...(decision.bind ? { resourceVersion: resourceVersion as string } : {}),
            },
            status: decision.status,
          },
          { fieldManager, subresource: "status" },
        );
      } catch (error) {
        // Changed (or gone) meanwhile: the watch brings the new version.
        if (isConflict(error) || isNotFound(error)) return undefined;
        throw error;
      }
      if (decision.bind) log.info({ host: decision.status.host }, "bound the snapshot to its volume's host");
      await reportProblem(
        Resources.volumeSnapshots,
        snapshot,
        decision.status.conditions.find((c) => c.type === "Bound"),
        "Bind",
      );
      return undefined;
    },
  })
    .watch(snapshots)
    // A volume that got its disk, arrived, or was created lets its waiting snapshots be bound.
    .watch(volumes, (volume) =>
      snapshots
        .byIndex("volume", objectKey(volume))
        .filter((s) => !s.status?.host)
        .map(objectKey),
    );

  const policyController = new Controller({
    name: "storage-snapshot-policies",
    logger,
    metrics,
    async reconcile(key, log) {
      const policy = policies.get(key);
      if (!policy || policy.metadata.deletionTimestamp) return undefined;
      const decision = decideSnapshotPolicy({
        policy,
        volumeExists: volumes.get(volumeKeyOf(policy)) !== undefined,
        snapshots: snapshots.byIndex("policy", key),
        now: new Date(),
      });
      if (decision.create) {
        try {
          await client.create(Resources.volumeSnapshots, decision.create);
          log.info({ snapshot: decision.create.metadata.name }, "took the slot's snapshot");
        } catch (error) {
          // Made already, by an earlier run or another replica: the slot is done.
          if (!isAlreadyExists(error)) throw error;
        }
      }
      for (const old of decision.prune) {
        await client
          .delete(Resources.volumeSnapshots, old.metadata.name as string, old.metadata.namespace, {
            uid: old.metadata.uid as string,
          })
          .then(
            () => log.info({ snapshot: old.metadata.name }, "deleted a snapshot beyond maxSnapshots"),
            (error: unknown) => {
              if (!isNotFound(error) && !isConflict(error)) throw error;
            },
          );
      }
      await applyStatus(client, Resources.snapshotPolicies, policy, decision.status, fieldManager).catch(
        (error: unknown) => {
          if (!isNotFound(error)) throw error;
        },
      );
      await reportProblem(
        Resources.snapshotPolicies,
        policy,
        decision.status.conditions.find((c) => c.type === "Ready"),
        "Schedule",
      );
      return decision.requeueAfterMs === undefined ? undefined : { requeueAfterMs: decision.requeueAfterMs };
    },
  })
    .watch(policies)
    .watch(volumes, (volume) => policies.byIndex("volume", objectKey(volume)).map(objectKey))
    .watch(snapshots, policyKeyOf);

  return [binding, policyController];
}

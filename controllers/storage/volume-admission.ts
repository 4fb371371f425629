// Storage: the accounts' primary-storage limits (CloudStack's resource type 10). In an account with
// a limit, every volume's size is granted here before any host makes or grows its disk
// (status.admittedSize, condition Admitted): one account at a time, in the order the volumes were
// made, so 50 volumes created at once against a limit admit exactly what fits, whichever front door
// made them. A volume past the limit waits with Admitted=False and CloudStack's words until the
// limit is raised or room is freed. An account without a limit costs no write.
import { type DiskOffering, Resources, type Volume } from "../../crds/index.ts";
import { formatQuantity } from "../../crds/quantity.ts";
import {
  RESOURCE_LIMITS_QUOTA,
  RESOURCE_QUOTAS,
  type ResourceQuota,
  storageLimitOf,
} from "../../crds/resource-limits.ts";
import { ADMITTED_CONDITION, grantedBytes, needsGrant, requestedBytes } from "../../crds/volume-admission.ts";
import { isNotFound } from "../../runtime/client.ts";
import type { ComponentContext } from "../../runtime/component.ts";
import { type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import type { Informer } from "../../runtime/informer.ts";
import { applyStatus } from "../../runtime/objects.ts";

export interface AdmissionInput {
  account: string;
  /** The account's volumes. */
  volumes: readonly Volume[];
  /** The account's limit in bytes; undefined: none. */
  limitBytes: bigint | undefined;
  requested: (volume: Volume) => bigint;
  /** Grants written but perhaps not in the cache yet, by volume UID: counted, never granted twice. */
  recent: ReadonlyMap<string, bigint>;
}

export interface Admission {
  volume: Volume;
  /**
   * The size granted, always written once there is one: server-side apply would drop a field this
   * writer left out.
   */
  admittedBytes?: bigint;
  condition: ConditionInput;
}

const gib = (bytes: bigint) => {
  const tenths = (bytes * 10n + 2n ** 30n - 1n) / 2n ** 30n;
  return `${tenths / 10n}${tenths % 10n ? `.${tenths % 10n}` : ""} GiB`;
};

/**
 * What each of the account's volumes is granted: the ones already holding their size keep it; the
 * others, oldest first, get their size while it fits under the limit. A grant is never taken back.
 */
export function decideAdmissions(input: AdmissionInput): Admission[] {
  const held = (volume: Volume) => {
    const recent = input.recent.get(volume.metadata.uid as string) ?? 0n;
    const granted = grantedBytes(volume);
    return recent > granted ? recent : granted;
  };
  let used = input.volumes.reduce((sum, volume) => sum + held(volume), 0n);
  const byAge = [...input.volumes].sort(
    (a, b) =>
      (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? "") ||
      (a.metadata.name as string).localeCompare(b.metadata.name as string),
  );
  const admissions: Admission[] = [];
  for (const volume of byAge) {
    // Without a limit, only volumes decided before (under a limit since lifted) are decided again.
    if (!needsGrant(volume, input.limitBytes !== undefined)) continue;
    const wanted = input.requested(volume);
    const has = held(volume);
    if (wanted <= has) {
      admissions.push({ volume, admittedBytes: has, condition: granted(has) });
      continue;
    }
    if (volume.metadata.deletionTimestamp) continue; // going: no new room for it
    if (input.limitBytes === undefined || used + wanted - has <= input.limitBytes) {
      used += wanted - has;
      admissions.push({ volume, admittedBytes: wanted, condition: granted(wanted) });
      continue;
    }
    admissions.push({
      volume,
      ...(has > 0n ? { admittedBytes: has } : {}),
      condition: {
        type: ADMITTED_CONDITION,
        status: "False",
        reason: "ResourceLimitExceeded",
        message: `Maximum number of resources of type 'primary_storage' for account ${input.account} has been exceeded: ${gib(used)} of ${gib(input.limitBytes)} in use, volume ${volume.metadata.name} needs ${gib(wanted - has)} more (updateResourceLimit resourcetype=10 raises it, or delete volumes).`,
      },
    });
  }
  return admissions;
}

function granted(bytes: bigint): ConditionInput {
  return {
    type: ADMITTED_CONDITION,
    status: "True",
    reason: "Admitted",
    message: `${formatQuantity(bytes)} granted within the account's primary-storage limit.`,
  };
}

/** The controller: one key per account namespace. */
export function volumeAdmissionController(
  { client, informers, metrics, logger, fieldManager }: ComponentContext,
  volumes: Informer<Volume>,
): Controller {
  volumes.addIndexers({ namespace: (volume) => [volume.metadata.namespace as string] });
  const diskOfferings = informers.for<DiskOffering>(Resources.diskOfferings);
  const limits = informers.for<ResourceQuota>(RESOURCE_QUOTAS, {
    fieldSelector: `metadata.name=${RESOURCE_LIMITS_QUOTA}`,
  });
  /** Per account: grants written that the cache may not show yet, by volume UID. */
  const recentByAccount = new Map<string, Map<string, bigint>>();
  const admissionManager = `${fieldManager}-admission`;

  return new Controller({
    name: "storage-volume-admission",
    logger,
    metrics,
    async reconcile(account) {
      const owned = volumes.byIndex("namespace", account);
      const recent = recentByAccount.get(account) ?? new Map<string, bigint>();
      // A grant the cache shows, or a volume gone, needs no memory of its own.
      const byUid = new Map(owned.map((v) => [v.metadata.uid as string, v]));
      for (const [uid, bytes] of recent) {
        const volume = byUid.get(uid);
        if (!volume || grantedBytes(volume) >= bytes) recent.delete(uid);
      }
      const admissions = decideAdmissions({
        account,
        volumes: owned,
        limitBytes: storageLimitOf(limits.get(`${account}/${RESOURCE_LIMITS_QUOTA}`)?.spec?.hard),
        requested: (volume) =>
          requestedBytes(
            volume,
            volume.spec.diskOffering ? diskOfferings.get(volume.spec.diskOffering) : undefined,
          ),
        recent,
      });
      for (const { volume, admittedBytes, condition } of admissions) {
        const status = {
          ...(admittedBytes !== undefined ? { admittedSize: formatQuantity(admittedBytes) } : {}),
          conditions: ownConditions(volume.status?.conditions, volume.metadata.generation, [condition]),
        };
        const wrote = await applyStatus(client, Resources.volumes, volume, status, admissionManager).catch(
          (error: unknown) => {
            if (isNotFound(error)) return false;
            throw error;
          },
        );
        if (wrote && admittedBytes !== undefined) recent.set(volume.metadata.uid as string, admittedBytes);
      }
      if (recent.size > 0) recentByAccount.set(account, recent);
      else recentByAccount.delete(account);
    },
  })
    .watch(volumes, (volume) => [volume.metadata.namespace as string])
    .watch(limits, (quota) => [quota.metadata.namespace as string]);
}

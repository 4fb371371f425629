// Pure: what a SnapshotPolicy's controller does now. The latest slot of the schedule that is not
// older than the policy gets one VolumeSnapshot, named after the policy and the slot so that a
// restart or a second replica can only ever create the same one; slots missed while nobody ran
// are not made up (only the latest is taken, as CloudStack). The newest maxSnapshots by slot stay.
import { SNAPSHOT_POLICY_LABEL, type SnapshotPolicy, type VolumeSnapshot } from "../../crds/index.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { kubeTime } from "../../runtime/time.ts";
import { parseSchedule, scheduleSlots } from "./snapshot-schedule.ts";

/** The slot a policy's snapshot was taken for (RFC 3339), so pruning orders by slot, not by age. */
export const SNAPSHOT_SLOT_ANNOTATION = "stratus.io/snapshot-slot";

/** Slots are looked at again at least this often, so a clock that jumped is noticed. */
export const MAX_SLOT_WAIT_MS = 3_600_000;
/** Past the slot when the requeue fires: timers may fire a little early. */
const SLOT_MARGIN_MS = 1_000;
/** A label value's limit: the policy's name is the value of SNAPSHOT_POLICY_LABEL. */
const LABEL_VALUE_MAX = 63;

/** yyyymmddhhmm in UTC. */
const slotStamp = (slot: Date) => slot.toISOString().replace(/[-:T]/g, "").slice(0, 12);

/** The snapshot of the policy for the slot: `<policy>-<yyyymmddhhmm UTC>`. */
export function slotSnapshotName(policy: string, slot: Date): string {
  return `${policy}-${slotStamp(slot)}`;
}

/** The slot a snapshot stands for: its annotation, else the stamp its name ends with, else its creation. */
export function slotOf(snapshot: VolumeSnapshot): number {
  const annotated = Date.parse(snapshot.metadata.annotations?.[SNAPSHOT_SLOT_ANNOTATION] ?? "");
  if (!Number.isNaN(annotated)) return annotated;
  const stamp = /-(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(snapshot.metadata.name ?? "");
  if (stamp) {
    const [year, month, day, hour, minute] = stamp.slice(1).map(Number) as [
      number,
      number,
      number,
      number,
      number,
    ];
    return Date.UTC(year, month - 1, day, hour, minute);
  }
  return Date.parse(snapshot.metadata.creationTimestamp ?? "") || 0;
}

/**
 * Which snapshots go so that the newest `keep` by slot stay; ones already being deleted are not
 * counted. The newest Ready one always stays, even past `keep`: a new snapshot that has not
 * finished (or failed) must never cost the last good copy.
 */
export function snapshotsToPrune(
  snapshots: readonly VolumeSnapshot[],
  keep: number,
): {
  kept: VolumeSnapshot[];
  pruned: VolumeSnapshot[];
} {
  const live = snapshots
    .filter((s) => !s.metadata.deletionTimestamp)
    .sort(
      (a, b) => slotOf(b) - slotOf(a) || (b.metadata.name as string).localeCompare(a.metadata.name as string),
    );
  const lastGood = live.find((s) => s.status?.phase === "Ready");
  const kept = live.slice(0, keep);
  if (lastGood && !kept.includes(lastGood)) kept.push(lastGood);
  return { kept, pruned: live.filter((s) => !kept.includes(s)) };
}

export interface PolicyInput {
  policy: SnapshotPolicy;
  volumeExists: boolean;
  /** The policy's snapshots (by SNAPSHOT_POLICY_LABEL), from the cache. */
  snapshots: readonly VolumeSnapshot[];
  now: Date;
}

export interface PolicyDecision {
  /** The snapshot to create for the latest slot (AlreadyExists means it is done). */
  create?: VolumeSnapshot;
  /** Snapshots to delete, once `create` succeeded. */
  prune: VolumeSnapshot[];
  /** The policy's status after that. */
  status: {
    lastSlot?: string;
    nextSlot?: string;
    snapshots: number;
    observedGeneration?: number;
    conditions: Condition[];
  };
  requeueAfterMs?: number;
}

export function decideSnapshotPolicy({ policy, volumeExists, snapshots, now }: PolicyInput): PolicyDecision {
  const { name, namespace, generation } = policy.metadata;
  const { volume, intervalType, schedule, maxSnapshots } = policy.spec;
  const timezone = policy.spec.timezone ?? "UTC";
  const current = (policy.status?.conditions ?? []) as Condition[];
  const lastSlot = policy.status?.lastSlot;
  const notReady = (reason: string, message: string): PolicyDecision => ({
    prune: [],
    status: {
      ...(lastSlot ? { lastSlot } : {}),
      snapshots: snapshotsToPrune(snapshots, Number.MAX_SAFE_INTEGER).kept.length,
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
      conditions: ownConditions(
        current,
        generation,
        [{ type: "Ready", status: "False", reason, message }],
        now,
      ),
    },
  });
  if ((name as string).length > LABEL_VALUE_MAX)
    return notReady(
      "NameTooLong",
      `The policy's name is its snapshots' ${LABEL_VALUE_MAX}-character label value; use a shorter name.`,
    );
  const parsed = parseSchedule(intervalType, schedule);
  if ("problem" in parsed) return notReady("InvalidSchedule", `The ${parsed.problem}.`);
  let slots: ReturnType<typeof scheduleSlots>;
  try {
    slots = scheduleSlots(intervalType, parsed, timezone, now);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    return notReady("InvalidTimezone", `Time zone "${timezone}" is not an IANA time zone.`);
  }
  if (!volumeExists) return notReady("VolumeNotFound", `Volume ${volume} does not exist in this namespace.`);

  const created = Date.parse(policy.metadata.creationTimestamp ?? "");
  const slot = slots.last;
  // A slot before the policy existed is not its own; one recorded already was taken (and may have
  // been deleted since by its owner, which must not bring it back).
  const due = slot.getTime() >= created && (lastSlot === undefined || Date.parse(lastSlot) < slot.getTime());
  const snapshotName = slotSnapshotName(name as string, slot);
  const create: VolumeSnapshot | undefined = due
    ? {
        apiVersion: "stratus.io/v1alpha1",
        kind: "VolumeSnapshot",
        metadata: {
          name: snapshotName,
          namespace: namespace as string,
          labels: { [SNAPSHOT_POLICY_LABEL]: name as string },
          annotations: { [SNAPSHOT_SLOT_ANNOTATION]: kubeTime(slot) },
        },
        spec: { volume },
      }
    : undefined;
  const all =
    create && !snapshots.some((s) => s.metadata.name === snapshotName) ? [...snapshots, create] : snapshots;
  const { kept, pruned } = snapshotsToPrune(all, maxSnapshots);
  const ready: ConditionInput = {
    type: "Ready",
    status: "True",
    reason: "Scheduled",
    message: `Next snapshot at ${kubeTime(slots.next)}; keeping the newest ${maxSnapshots}.`,
  };
  const taken = due ? kubeTime(slot) : lastSlot;
  return {
    ...(create ? { create } : {}),
    prune: pruned,
    status: {
      ...(taken ? { lastSlot: taken } : {}),
      nextSlot: kubeTime(slots.next),
      snapshots: kept.length,
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
      conditions: ownConditions(current, generation, [ready], now),
    },
    requeueAfterMs: Math.min(slots.next.getTime() - now.getTime() + SLOT_MARGIN_MS, MAX_SLOT_WAIT_MS),
  };
}

// Pure: what the storage controller writes on a Volume: where its disk must move (transfer.target)
// when its VM was placed on a host that cannot reach the disk's pool, the Moved condition while
// that is under way or impossible, and the InUse deletion guard of data volumes.
import type { Host, VirtualMachine, Volume } from "../../crds/index.ts";
import { choosePools, type PoolUsage, reaches, type VolumeNeed } from "../../crds/volume-placement.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { statusSays } from "../../runtime/objects.ts";

/** How often a disk with no pool to go to is looked at again (pools free up, hosts report). */
export const NO_TARGET_RETRY_MS = 30_000;

export interface TransferInput {
  volume: Volume;
  need: VolumeNeed;
  /** The VM using the volume (its owner for ROOT, its attaching VM for DATADISK). */
  user: VirtualMachine | undefined;
  /** The host of `user.status.host`, from the cache. */
  host: Host | undefined;
  /** The pools of the volume's zone, with what the other volumes take of them. */
  pools: readonly PoolUsage[];
  /** InUse for data volumes (undefined for ROOT volumes, which have no deletion guard). */
  inUse?: ConditionInput;
  now?: Date;
}

export interface TransferDecision {
  /** storage's whole share of the Volume's status. */
  status: { conditions: Condition[]; transfer?: { target: { pool: string; host: string } } };
  /** Whether the status must be written: it says something new, or drops a target or condition. */
  write: boolean;
  requeueAfterMs?: number;
}

type Target = { pool: string; host: string };

/** Where the disk must go, or why it cannot go anywhere; undefined when it stays. */
export function transferTarget(input: TransferInput): { target?: Target; problem?: string } {
  const { volume, user, host } = input;
  const current = volume.status?.transfer?.target;
  const pool = volume.status?.pool;
  // The move is done: the holding agent rewrote status.pool to the target.
  if (!pool || (current && current.pool === pool)) return {};
  const wanted = user?.metadata.deletionTimestamp ? undefined : user?.status?.host;
  // A move under way finishes unless the VM went to yet another host: half a copy is never left.
  if (current && (wanted === undefined || wanted === current.host)) return { target: current };
  if (!wanted || !host || wanted === volume.status?.host) return {};
  const here = input.pools.find((u) => u.pool.metadata.name === pool);
  if (here && reaches(here.pool, host)) return {};
  const choice = choosePools([{ ...input.need, pool }], host, input.pools);
  if ("reason" in choice) return { problem: choice.reason };
  const chosen = choice.choices.get(input.need.volume);
  return chosen?.moves ? { target: { pool: chosen.pool, host: wanted } } : {};
}

export function decideVolumeStatus(input: TransferInput): TransferDecision {
  const { volume } = input;
  const { target, problem } = transferTarget(input);
  const moved: ConditionInput | undefined = target
    ? {
        type: "Moved",
        status: "False",
        reason: "Moving",
        message: `The disk is being copied from pool ${volume.status?.pool} to pool ${target.pool} for host ${target.host}.`,
      }
    : problem
      ? { type: "Moved", status: "False", reason: "NoTargetPool", message: `${problem}.` }
      : undefined;
  const inputs = [input.inUse, moved].filter((c) => c !== undefined);
  const current = (volume.status?.conditions ?? []) as Condition[];
  const conditions = ownConditions(current, volume.metadata.generation, inputs, input.now);
  const status = { conditions, ...(target ? { transfer: { target } } : {}) };
  // Applying less drops what storage wrote before, which "says the same" cannot see.
  const write =
    !statusSays(status, (volume.status ?? {}) as Record<string, unknown>) ||
    (volume.status?.transfer?.target !== undefined && !target) ||
    (current.some((c) => c.type === "Moved") && !moved);
  return {
    status,
    write,
    ...(problem ? { requeueAfterMs: NO_TARGET_RETRY_MS } : {}),
  };
}

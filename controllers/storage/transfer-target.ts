// Pure: what the storage controller writes on a Volume: where its disk must move (transfer.target)
// when its VM was placed on a host that cannot reach the disk's pool, the host a disk in a shared
// pool is released to when its VM runs there (releasedTo), the Moved condition while a move is
// under way or impossible, and the InUse deletion guard of data volumes.
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
  /** Any host by name, from the cache (the receiver of a requested move). */
  hostNamed: (name: string) => Host | undefined;
  /** The pools of the volume's zone, with what the other volumes take of them. */
  pools: readonly PoolUsage[];
  /** InUse for data volumes (undefined for ROOT volumes, which have no deletion guard). */
  inUse?: ConditionInput;
  now?: Date;
}

export interface TransferDecision {
  /** storage's whole share of the Volume's status. */
  status: {
    conditions: Condition[];
    transfer?: { target: { pool: string; host: string } };
    releasedTo?: string;
  };
  /** Whether the status must be written: it says something new, or drops a target or condition. */
  write: boolean;
  /**
   * The write changes or drops a target: it must be made on the version decided from (a
   * resourceVersion precondition), so a copy announced meanwhile is never orphaned.
   */
  guarded: boolean;
  requeueAfterMs?: number;
}

type Target = { pool: string; host: string };
type TargetChoice = { target?: Target; problem?: string };

/** Where the disk must go, or why it cannot go anywhere; undefined when it stays. */
export function transferTarget(input: TransferInput): TargetChoice {
  const { volume, user } = input;
  const current = volume.status?.transfer?.target;
  const pool = volume.status?.pool;
  // The move is done: the holding agent rewrote status.pool to the target.
  if (!pool || (current && current.pool === pool)) return {};
  // A copy begun (announced in `received` before its first byte) is finished before the disk goes
  // anywhere else, so no copy is ever left behind in a pool that stopped being the target.
  if (current && volume.status?.transfer?.received) return { target: current };
  const wanted = user?.metadata.deletionTimestamp ? undefined : user?.status?.host;
  const decided = decideTarget(input, wanted);
  // A move under way finishes unless the VM went to yet another host, or, before its copy began, a
  // request for another pool replaces it or one for the pool it is in calls it off.
  if (current && (wanted === undefined || wanted === current.host)) {
    const asked = decided.target?.pool;
    const replaced = asked !== undefined && asked === volume.spec.pool && asked !== current.pool;
    const calledOff = volume.spec.pool === pool && !decided.target && !decided.problem;
    return replaced ? decided : calledOff ? {} : { target: current };
  }
  return decided;
}

function decideTarget(input: TransferInput, wanted: string | undefined): TargetChoice {
  const { volume, host } = input;
  const pool = volume.status?.pool as string;
  const requested = volume.spec.pool && volume.spec.pool !== pool ? volume.spec.pool : undefined;
  const here = input.pools.find((u) => u.pool.metadata.name === pool);
  const mustFollow =
    wanted !== undefined &&
    host !== undefined &&
    wanted !== volume.status?.host &&
    !(here && reaches(here.pool, host));
  if (mustFollow) {
    // The VM went to a host that does not reach the disk: it follows, to the requested pool if that fits.
    const asked = requested ? requestedTarget(input, requested, wanted) : undefined;
    if (asked?.target) return asked;
    const choice = choosePools([{ ...input.need, pool }], host, input.pools);
    if ("reason" in choice) return { problem: choice.reason };
    const chosen = choice.choices.get(input.need.volume);
    return chosen?.moves ? { target: { pool: chosen.pool, host: wanted } } : {};
  }
  return requested ? requestedTarget(input, requested, wanted) : {};
}

/**
 * A move to the pool the volume's spec asks for. The copy is made by the host that will use it:
 * a local pool's own host, else the VM's host, else the host holding the disk now.
 */
function requestedTarget(input: TransferInput, requested: string, vmHost: string | undefined): TargetChoice {
  const { volume } = input;
  const name = volume.metadata.name as string;
  const usage = input.pools.find((u) => u.pool.metadata.name === requested);
  if (!usage)
    return { problem: `volume ${name}: pool ${requested} does not exist in zone ${volume.spec.zone}` };
  const local = usage.pool.spec.type === "local" ? usage.pool.spec.host : undefined;
  if (local && vmHost && local !== vmHost)
    return {
      problem: `volume ${name}: pool ${requested} is local to host ${local}, but its VM is on host ${vmHost}; move the VM with its volumes instead`,
    };
  const receiver = local ?? vmHost ?? volume.status?.host;
  const host = receiver ? input.hostNamed(receiver) : undefined;
  if (!receiver || !host) return { problem: `volume ${name}: no host to copy it into pool ${requested}` };
  const { pool: _current, ...fresh } = input.need; // measured as a new disk in that pool
  const choice = choosePools([fresh], host, [usage]);
  if ("reason" in choice) return { problem: choice.reason };
  return { target: { pool: requested, host: receiver } };
}

/**
 * The host whose agent may take the disk from its holder (the admission policy lets no other): the
 * VM's new host, when the disk is in a shared pool that host reaches, so nothing is copied. Once
 * taken the release stays as it is (no write); one to a host the VM has left is withdrawn.
 */
function releaseTarget(input: TransferInput, target: Target | undefined): string | undefined {
  const { volume, host } = input;
  const holder = volume.status?.host;
  const wanted = input.user?.metadata.deletionTimestamp ? undefined : input.user?.status?.host;
  const here = input.pools.find((u) => u.pool.metadata.name === volume.status?.pool);
  if (holder && wanted && wanted !== holder && !target && host && here && reaches(here.pool, host))
    return wanted;
  const current = volume.status?.releasedTo;
  return current === holder ? current : undefined;
}

export function decideVolumeStatus(input: TransferInput): TransferDecision {
  const { volume } = input;
  const { target, problem } = transferTarget(input);
  const releasedTo = releaseTarget(input, target);
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
  const status = {
    conditions,
    ...(target ? { transfer: { target } } : {}),
    ...(releasedTo ? { releasedTo } : {}),
  };
  // Applying less drops what storage wrote before, which "says the same" cannot see.
  const write =
    !statusSays(status, (volume.status ?? {}) as Record<string, unknown>) ||
    (volume.status?.transfer?.target !== undefined && !target) ||
    (volume.status?.releasedTo !== undefined && !releasedTo) ||
    (current.some((c) => c.type === "Moved") && !moved);
  const before = volume.status?.transfer?.target;
  const guarded = before !== undefined && (before.pool !== target?.pool || before.host !== target?.host);
  return {
    status,
    write,
    guarded,
    ...(problem ? { requeueAfterMs: NO_TARGET_RETRY_MS } : {}),
  };
}

// Pure: what compute says about a VirtualMachineMigration. Before a target is chosen it validates
// the move as CloudStack's migrateVirtualMachine does (a running VM, volumes all on shared pools,
// a target that passes the placement filters and takes migrations) and keeps at most N
// migrations per host at once; once it chose (status.targetHost, the admission), only the source
// agent's transfer report moves the phase on, so compute and the agent never race on a start.
import type {
  Host,
  MigrationPhase,
  StoragePool,
  VirtualMachine,
  VirtualMachineMigration,
} from "../../crds/index.ts";
import { isFinalMigrationPhase, isSharedPoolType } from "../../crds/index.ts";
import type { VolumeNeed } from "../../crds/volume-placement.ts";
import {
  anchoredGroups,
  type Demand,
  type HostUsage,
  type StorageDemand,
  unfitReason,
} from "../scheduler/placement.ts";

export type MigrationStatus = NonNullable<VirtualMachineMigration["status"]>;

export interface MigrationInput {
  migration: VirtualMachineMigration;
  vm: VirtualMachine | undefined;
  /** Another migration of the same VM that is not final, if any. */
  otherActive?: string;
  /** What the VM asks of a host; undefined when its offering is missing. */
  demand: Demand | undefined;
  /** The VM's volumes and the zone's pools. */
  storage: StorageDemand & { poolsByName: ReadonlyMap<string, StoragePool> };
  hosts: readonly HostUsage[];
  /** Migrations admitted and not final with this host as source or target (this one not counted). */
  activeOn: (host: string) => number;
  maxPerHost: number;
  now: Date;
}

export interface MigrationDecision {
  status: Partial<MigrationStatus>;
  finalizer?: "add" | "remove";
}

/** One candidate target, as findHostsForMigration shows it. */
export interface TargetVerdict {
  host: string;
  suitable: boolean;
  reason?: string;
}

/** Why the VM cannot move live at all (stopped, local disks, ...), or undefined. */
export function refusal(input: Pick<MigrationInput, "vm" | "storage" | "otherActive">): string | undefined {
  const { vm } = input;
  if (!vm || vm.metadata.deletionTimestamp) return "VMNotFound";
  if (!vm.status?.host || vm.status.state !== "Running") return "VMNotRunning";
  if (input.otherActive) return "AlreadyMigrating";
  if (localVolume(input.storage.volumes, input.storage.poolsByName)) return "VolumeOnLocalStorage";
  return undefined;
}

/** A volume whose disk is not (known to be) on a shared pool: only shared disks stay reachable. */
function localVolume(volumes: readonly VolumeNeed[], pools: ReadonlyMap<string, StoragePool>) {
  return volumes.find((v) => {
    const pool = v.pool ? pools.get(v.pool) : undefined;
    return !pool || !isSharedPoolType(pool.spec.type);
  });
}

export function refusalMessage(
  input: Pick<MigrationInput, "vm" | "storage" | "otherActive"> & { vmName: string },
  reason: string,
) {
  const name = input.vmName;
  switch (reason) {
    case "VMNotFound":
      return `VM ${name} does not exist.`;
    case "VMNotRunning":
      return `VM ${name} is ${input.vm?.status?.state ?? "not placed"}: only a running VM migrates live.`;
    case "AlreadyMigrating":
      return `VM ${name} is already migrating (${input.otherActive}).`;
    default: {
      const volume = localVolume(input.storage.volumes, input.storage.poolsByName);
      const where = volume?.pool ? `in pool ${volume.pool}, which is not shared` : "not created yet";
      return `Volume ${volume?.volume} is ${where}: only VMs whose volumes are all on shared pools migrate live.`;
    }
  }
}

/** Each host of the zone but the source, with why it cannot take the VM (placement filters first). */
export function judgeTargets(input: MigrationInput, source: string): TargetVerdict[] {
  return input.hosts
    .filter((usage) => usage.host.metadata.name !== source && usage.host.spec.zone === input.demand?.zone)
    .map((usage) => {
      const host = usage.host.metadata.name as string;
      const reason = targetProblem(input, usage);
      return reason ? { host, suitable: false, reason } : { host, suitable: true };
    })
    .sort((a, b) => Number(b.suitable) - Number(a.suitable) || a.host.localeCompare(b.host));
}

function targetProblem(input: MigrationInput, usage: HostUsage): string | undefined {
  const host: Host = usage.host;
  if (host.status?.hypervisor?.type === "Simulator")
    return "simulated (libvirt's test driver cannot migrate)";
  if (!host.status?.migrationUri) return "its agent takes no migrations (no status.migrationUri)";
  const demand = input.demand as Demand;
  const unfit = unfitReason(
    { ...demand, volumeHosts: [] },
    usage,
    input.storage,
    anchoredGroups(demand, input.hosts),
  );
  if (unfit) return unfit;
  const busy = input.activeOn(host.metadata.name as string);
  if (busy >= input.maxPerHost) return `${busy} migrations under way (at most ${input.maxPerHost})`;
  return undefined;
}

export function decideMigration(input: MigrationInput): MigrationDecision {
  const { migration } = input;
  const current = migration.status ?? {};
  const hasFinalizer = migration.metadata.finalizers?.includes("stratus.io/migration") ?? false;
  const at = input.now.toISOString();
  const final = (phase: MigrationPhase, reason: string, message: string): MigrationDecision => ({
    status: { ...current, phase, reason, message, completedAt: current.completedAt ?? at },
    ...(hasFinalizer ? { finalizer: "remove" as const } : {}),
  });
  if (isFinalMigrationPhase(current.phase))
    return { status: current, ...(hasFinalizer ? { finalizer: "remove" as const } : {}) };
  if (current.targetHost) return afterAdmission(input, final);
  if (migration.metadata.deletionTimestamp)
    return final("Cancelled", "Deleted", "Deleted before it started.");
  const reason = refusal(input);
  if (reason) return final("Failed", reason, refusalMessage({ ...input, vmName: migration.spec.vm }, reason));
  const source = input.vm?.status?.host as string;
  if (!input.demand) return final("Failed", "ServiceOfferingNotFound", `The VM's offering does not exist.`);
  const sourceBusy = input.activeOn(source);
  if (sourceBusy >= input.maxPerHost)
    return pending(
      current,
      `${sourceBusy} migrations from or to ${source} under way (at most ${input.maxPerHost}).`,
    );
  const verdicts = judgeTargets(input, source);
  const wanted = migration.spec.targetHost;
  const chosen = wanted ? verdicts.find((v) => v.host === wanted) : verdicts.find((v) => v.suitable);
  if (wanted && wanted === source)
    return final("Failed", "SameHost", `VM ${migration.spec.vm} already runs on ${source}.`);
  if (wanted && !chosen)
    return final("Failed", "HostNotFound", `Host ${wanted} is not a host of zone ${input.demand.zone}.`);
  if (!chosen?.suitable) {
    // Busy hosts free up; everything else is for a person to change.
    if (chosen?.reason?.includes("migrations under way"))
      return pending(current, `Host ${chosen.host}: ${chosen.reason}.`);
    const why = wanted
      ? `Host ${wanted} cannot take VM ${migration.spec.vm}: ${chosen?.reason}.`
      : `No host can take VM ${migration.spec.vm}: ${verdicts.map((v) => `${v.host}: ${v.reason}`).join("; ") || "no other host in the zone"}.`;
    return final("Failed", "NoSuitableHost", why);
  }
  if (!hasFinalizer) return { status: current, finalizer: "add" };
  return {
    status: {
      ...current,
      phase: "Scheduling",
      sourceHost: source,
      targetHost: chosen.host,
      reason: "TargetChosen",
      message: `Moving from ${source} to ${chosen.host}; the source host's agent starts the transfer.`,
      scheduledAt: at,
    },
  };
}

function pending(current: Partial<MigrationStatus>, message: string): MigrationDecision {
  return { status: { ...current, phase: "Pending", reason: "WaitingForSlot", message } };
}

/** After the admission the source agent's report leads; compute moves status.host on Completed. */
function afterAdmission(
  input: MigrationInput,
  final: (phase: MigrationPhase, reason: string, message: string) => MigrationDecision,
): MigrationDecision {
  const current = input.migration.status ?? {};
  const transfer = current.transfer;
  const { sourceHost, targetHost } = current;
  switch (transfer?.state) {
    case undefined:
      return { status: current };
    case "Running":
      return {
        status: {
          ...current,
          phase: "Running",
          reason: "Transferring",
          message: `Moving from ${sourceHost} to ${targetHost}.`,
        },
      };
    case "Failed":
      return final(
        "Failed",
        "TransferFailed",
        transfer.message ?? "The transfer failed; the VM runs on where it was.",
      );
    case "Cancelled":
      return final("Cancelled", "Cancelled", transfer.message ?? "Cancelled; the VM runs on where it was.");
    case "Completed":
      if (input.vm?.status?.host === targetHost)
        return final(
          "Succeeded",
          "Migrated",
          `Runs on ${targetHost} since it moved from ${sourceHost}${transfer.durationMilliseconds !== undefined ? ` in ${(transfer.durationMilliseconds / 1000).toFixed(1)} s` : ""}.`,
        );
      return {
        status: {
          ...current,
          phase: "Running",
          reason: "Handover",
          message: `The guest runs on ${targetHost}; the VM is bound there next.`,
        },
      };
  }
}

/**
 * The target compute binds the VM to: its live migration from its current host completed and is
 * not over yet (compute makes it Succeeded only after this move).
 */
export function migratedTo(
  vm: VirtualMachine,
  migrations: readonly VirtualMachineMigration[],
): string | undefined {
  const done = migrations.find(
    (m) =>
      m.spec.vm === vm.metadata.name &&
      // A finished migration is history: the VM may have moved again since.
      !isFinalMigrationPhase(m.status?.phase) &&
      m.status?.transfer?.state === "Completed" &&
      m.status.sourceHost === vm.status?.host &&
      m.status.targetHost !== undefined,
  );
  return done?.status?.targetHost;
}

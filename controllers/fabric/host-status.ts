// Pure: what a Host's status should say, from its heartbeat Lease and the VMs placed on it.
// Ready follows the Lease (no status write per heartbeat); the resource state follows the
// administrator's spec and how far maintenance has got.
import type { Host, VirtualMachine } from "../../crds/index.ts";
import { formatQuantity } from "../../crds/quantity.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import type { Lease } from "../../runtime/leader-election.ts";

export interface PlacedUsage {
  cpu: number;
  memoryBytes: bigint;
  virtualMachines: number;
  /** VMs evacuated from the host that no other host can take (Scheduled False, Unschedulable). */
  stranded?: readonly { vm: string; message: string }[];
}

/** A VM the host's maintenance evacuated and compute could place nowhere, and why. */
export function strandedBy(host: string, vm: VirtualMachine): { vm: string; message: string } | undefined {
  if (vm.status?.host !== host || vm.status.evacuatedFrom !== host) return undefined;
  const scheduled = vm.status.conditions?.find((c) => c.type === "Scheduled");
  if (scheduled?.status !== "False" || scheduled.reason !== "Unschedulable") return undefined;
  return { vm: `${vm.metadata.namespace}/${vm.metadata.name}`, message: scheduled.message };
}

/** When the heartbeat stops being current, or undefined when there is none. */
export function heartbeatDeadline(lease: Lease | undefined, graceMs: number): number | undefined {
  const renewed = lease?.spec.renewTime ? Date.parse(lease.spec.renewTime) : Number.NaN;
  if (!lease || Number.isNaN(renewed)) return undefined;
  return renewed + (lease.spec.leaseDurationSeconds ?? 20) * 1000 + graceMs;
}

export function desiredHostStatus(
  host: Host,
  lease: Lease | undefined,
  placed: PlacedUsage,
  options: { graceMs: number; leaseName: string },
  now: Date = new Date(),
): { status: Record<string, unknown>; recheckAfterMs?: number } {
  const deadline = heartbeatDeadline(lease, options.graceMs);
  const ready: ConditionInput =
    deadline === undefined
      ? {
          type: "Ready",
          status: "False",
          reason: "NoHeartbeat",
          message: `The host agent has not renewed its heartbeat Lease ${options.leaseName} yet.`,
        }
      : deadline > now.getTime()
        ? {
            type: "Ready",
            status: "True",
            reason: "HeartbeatCurrent",
            message: "The host agent renews its heartbeat.",
          }
        : {
            type: "Ready",
            status: "False",
            reason: "HeartbeatExpired",
            message: `The host agent last renewed its heartbeat at ${lease?.spec.renewTime}; its VMs are Unknown.`,
          };
  const isReady = ready.status === "True";
  const stranded = placed.stranded ?? [];
  // A VM nobody can take would keep the host preparing forever: the admin must act.
  const resourceState = host.spec.maintenance
    ? placed.virtualMachines === 0
      ? "Maintenance"
      : isReady && stranded.length === 0
        ? "PrepareForMaintenance"
        : "ErrorInMaintenance"
    : host.spec.degraded
      ? "Degraded"
      : (host.spec.allocationState ?? "Enabled") === "Disabled"
        ? "Disabled"
        : "Enabled";
  const schedulable: ConditionInput = !isReady
    ? { type: "Schedulable", status: "False", reason: "NotReady", message: "The host is not ready." }
    : host.spec.maintenance
      ? {
          type: "Schedulable",
          status: "False",
          reason: resourceState,
          message:
            resourceState === "Maintenance"
              ? "The host is in maintenance."
              : stranded.length > 0
                ? `${stranded.length} of ${placed.virtualMachines} VM(s) cannot move off the host: ${stranded
                    .slice(0, 3)
                    .map((s) => `VM ${s.vm}: ${s.message}`)
                    .join("; ")}`
                : `Moving ${placed.virtualMachines} VM(s) off the host for maintenance.`,
        }
      : resourceState === "Disabled" || resourceState === "Degraded"
        ? {
            type: "Schedulable",
            status: "False",
            reason: resourceState,
            message:
              resourceState === "Degraded"
                ? "An administrator declared the host degraded."
                : "The host is disabled.",
          }
        : { type: "Schedulable", status: "True", reason: "Enabled", message: "The host accepts VMs." };
  const status = {
    resourceState,
    allocated: {
      cpu: placed.cpu,
      memory: formatQuantity(placed.memoryBytes),
      virtualMachines: placed.virtualMachines,
    },
    conditions: ownConditions(
      host.status?.conditions as Condition[] | undefined,
      host.metadata.generation,
      [ready, schedulable],
      now,
    ),
  };
  return isReady && deadline !== undefined
    ? { status, recheckAfterMs: Math.max(deadline - now.getTime(), 100) }
    : { status };
}

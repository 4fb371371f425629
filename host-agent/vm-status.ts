// Pure: what the agent reports for a VM, from its spec and the domain libvirt shows.
import type { VirtualMachine } from "../crds/index.ts";
import { type Condition, ownConditions } from "../runtime/conditions.ts";
import type { ObservedDomain } from "./hypervisor.ts";

/** What the status needs of a domain (libvirt's DomainInfo and the seam's ObservedDomain both fit). */
type DomainInfo = Pick<ObservedDomain, "state" | "shutoffReason" | "uuid">;

export type RunIntent = "run" | "stop" | "leave";

/**
 * What runStrategy asks of the domain right now. Manual leaves it as the start/stop calls left it.
 * RerunOnFailure restarts a crashed or destroyed domain but not one whose guest powered itself off
 * while the agent had reported this generation of the VM (so setting Always, or any spec change
 * after the shutdown, starts it again).
 */
export function runIntent(vm: VirtualMachine, domain?: DomainInfo): RunIntent {
  switch (vm.spec.runStrategy ?? "Always") {
    case "Always":
      return "run";
    case "RerunOnFailure":
      return domain?.shutoffReason === "shutdown" && readyGeneration(vm) === vm.metadata.generation
        ? "leave"
        : "run";
    case "Halted":
      return "stop";
    default:
      return "leave";
  }
}

function readyGeneration(vm: VirtualMachine): number | undefined {
  return vm.status?.conditions?.find((c) => c.type === "Ready")?.observedGeneration;
}

export function vmState(domain: DomainInfo | undefined): NonNullable<VirtualMachine["status"]>["state"] {
  switch (domain?.state) {
    // Paused for a snapshot's copy, for a moment: still a running VM, as CloudStack's KVM agent says.
    case "running":
    case "blocked":
    case "paused":
      return "Running";
    case "shutdown":
      return "Stopping";
    case "shutoff":
    case "pmsuspended":
      return "Stopped";
    case "crashed":
      return "Error";
    default:
      return "Pending";
  }
}

export function desiredVmStatus(
  vm: VirtualMachine,
  host: string,
  domain: DomainInfo | undefined,
  now = new Date(),
) {
  const intent = runIntent(vm, domain);
  // CloudStack's transitional states: a guest asked to stop that still runs is Stopping.
  // A VM asked to stop that has no domain here yet is simply stopped (nothing is defined for it).
  const observed = !domain && intent === "stop" ? "Stopped" : vmState(domain);
  const state = intent === "stop" && observed === "Running" ? "Stopping" : observed;
  const settled =
    (intent === "run" && state === "Running") ||
    (intent === "stop" && state === "Stopped") ||
    (intent === "leave" && domain !== undefined);
  const guestShutdown = intent === "leave" && domain?.shutoffReason === "shutdown";
  const ready = settled
    ? {
        type: "Ready",
        status: "True" as const,
        reason: guestShutdown ? "GuestShutdown" : (state as string),
        message: guestShutdown
          ? `The guest powered itself off on ${host}; runStrategy ${vm.spec.runStrategy} does not restart it.`
          : domain
            ? `The domain is ${domain.state} on ${host}.`
            : `The VM is stopped; no domain is defined on ${host}.`,
      }
    : {
        type: "Ready",
        status: "False" as const,
        reason: "Converging",
        message: `The domain is ${domain?.state ?? "not defined yet"} on ${host}; runStrategy ${vm.spec.runStrategy ?? "Always"} wants it ${intent === "run" ? "running" : "stopped"}.`,
      };
  return {
    observedGeneration: vm.metadata.generation ?? 0,
    state,
    ...(domain ? { domainUUID: domain.uuid } : {}),
    // Only the condition the agent owns: the other writers' conditions stay theirs.
    conditions: ownConditions(
      vm.status?.conditions as Condition[] | undefined,
      vm.metadata.generation,
      [ready],
      now,
    ),
  };
}

/** A failure of libvirt itself (the daemon gone, a call refused), not a problem of the VM. */
export function isHypervisorError(error: unknown): boolean {
  return (error as Error)?.name === "LibvirtError";
}

/** Ready Unknown with libvirt's reason: the host cannot say what the guest does. */
export function readyUnknown(vm: VirtualMachine, message: string) {
  return ownConditions(vm.status?.conditions as Condition[] | undefined, vm.metadata.generation, [
    { type: "Ready", status: "Unknown", reason: "HypervisorError", message },
  ]);
}

// Pure: what the agent reports for a VM, from its spec and the domain libvirt shows.
import type { VirtualMachine } from "../crds/index.ts";
import { type Condition, setCondition } from "../runtime/conditions.ts";
import type { DomainInfo } from "./libvirt/connection.ts";

export type RunIntent = "run" | "stop" | "leave";

/** What runStrategy asks of the domain right now. Manual leaves it as the start/stop calls left it. */
export function runIntent(vm: VirtualMachine): RunIntent {
  switch (vm.spec.runStrategy ?? "Always") {
    case "Always":
    case "RerunOnFailure":
      return "run";
    case "Halted":
      return "stop";
    default:
      return "leave";
  }
}

export function vmState(domain: DomainInfo | undefined): NonNullable<VirtualMachine["status"]>["state"] {
  switch (domain?.state) {
    case "running":
    case "blocked":
      return "Running";
    case "shutdown":
      return "Stopping";
    case "shutoff":
    case "paused":
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
  const state = vmState(domain);
  const intent = runIntent(vm);
  const settled =
    (intent === "run" && state === "Running") ||
    (intent === "stop" && state === "Stopped") ||
    (intent === "leave" && domain !== undefined);
  const ready = settled
    ? {
        type: "Ready",
        status: "True" as const,
        reason: state as string,
        message: `The domain is ${domain?.state} on ${host}.`,
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
    conditions: setCondition(
      vm.status?.conditions as Condition[] | undefined,
      ready,
      vm.metadata.generation,
      now,
    ),
  };
}

// Pure: the CloudStack state of a VM as people see it. status.state is only what a host agent
// reports; before an agent reports, and while its host is lost, the state follows from the rest.
import { awaitingFailoverRestart, DEPLOY_FAILED_ANNOTATION, type VirtualMachine } from "./index.ts";
import type { VM_STATES } from "./kinds/virtual-machine.ts";

export type VirtualMachineState = (typeof VM_STATES)[number];

export interface DisplayStateOptions {
  /** Whether the VM's host is Ready, when the caller knows it; else the VM's HostReady condition tells. */
  hostReady?: boolean;
}

export function displayState(vm: VirtualMachine, options: DisplayStateOptions = {}): VirtualMachineState {
  if (vm.metadata.deletionTimestamp) return "Destroyed";
  const placed = vm.status?.host !== undefined;
  const hostLost =
    options.hostReady === false ||
    vm.status?.conditions?.some((c) => c.type === "HostReady" && c.status === "False") === true;
  if (placed && hostLost) return "Unknown";
  // Placed on a new host after a failover: the state the lost host's agent wrote last is stale
  // until the fabric has seen the guest run on the new one.
  if (awaitingFailoverRestart(vm)) return "Starting";
  if (vm.status?.state) return vm.status.state;
  if (vm.metadata.annotations?.[DEPLOY_FAILED_ANNOTATION] !== undefined) return "Error";
  if (vm.spec.runStrategy === "Halted") return "Stopped";
  return placed ? "Starting" : "Pending";
}

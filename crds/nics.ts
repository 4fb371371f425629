// Pure: the MAC address of a VM's NIC. The orchestrator records it in VM status and the host agent
// puts it in the domain, so both derive it here (stable across restarts and moves).
import type { VirtualMachine } from "./index.ts";

/** A locally administered unicast MAC derived from the VM UID and NIC index (stable across restarts). */
export function macFor(vmUid: string, nicIndex: number): string {
  const hex = vmUid.replaceAll("-", "");
  const bytes = [
    0x52,
    0x54,
    0x00,
    Number.parseInt(hex.slice(0, 2), 16),
    Number.parseInt(hex.slice(2, 4), 16),
    (Number.parseInt(hex.slice(4, 6), 16) + nicIndex) % 256,
  ];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** The MAC of the VM's NIC at `index`: the fixed one of the spec, else the derived one. */
export function nicMacAddress(vm: VirtualMachine, index: number): string {
  return vm.spec.nics?.[index]?.macAddress ?? macFor(vm.metadata.uid as string, index);
}

// The VirtualMachine fields the CloudStack API writes for guest login, added to the kind by the
// guest-login branch (crds/kinds/virtual-machine.ts); until a cloud's CRD has them, the API server
// prunes them, and a command that set them fails instead of answering as if the guest got them.
import { Resources, type VirtualMachine } from "../crds/index.ts";
import type { Call } from "./api.ts";
import { ApiError, ERROR } from "./envelope.ts";

/** The VM fields this module writes: added to the VirtualMachine kind by the guest-login branch. */
export interface GuestLoginSpec {
  keyPairs?: string[];
  passwordSecret?: string;
}

/**
 * A VM write the API server kept only in part: a CRD without the guest-login fields prunes them, and
 * the command must then fail rather than answer as if the guest would get its keys or password.
 */
export function prunedGuestLoginField(vm: VirtualMachine, wanted: GuestLoginSpec): string | undefined {
  const spec = vm.spec as GuestLoginSpec;
  if (wanted.keyPairs && !spec.keyPairs) return "spec.keyPairs";
  if (wanted.passwordSecret && !spec.passwordSecret) return "spec.passwordSecret";
  return undefined;
}

export function guestLoginUnsupported(field: string): ApiError {
  return new ApiError(
    ERROR.RESOURCE_UNAVAILABLE,
    `This cloud's VirtualMachine kind has no ${field} yet, so the guest could not get it: install the current CRDs`,
  );
}

/** Sets guest-login fields of the VM as the caller; refuses (534) when the CRD dropped them. */
export async function setGuestLoginFields(
  call: Call,
  vm: VirtualMachine,
  fields: GuestLoginSpec,
): Promise<VirtualMachine> {
  const updated = await call.caller.client.mergePatch<VirtualMachine>(
    Resources.virtualMachines,
    vm.metadata.name as string,
    vm.metadata.namespace,
    { spec: fields },
  );
  const pruned = prunedGuestLoginField(updated, fields);
  if (pruned) throw guestLoginUnsupported(pruned);
  return updated;
}

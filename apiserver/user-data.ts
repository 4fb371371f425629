// A VM's user data lives in a Secret of its namespace (key `userdata`), never in the VM: every host
// agent may read every VM, but only the agent of the VM's host may read its user data (through
// virtualmachines/userdata, subresources.ts). The CloudStack API writes the Secret itself once the
// caller's own write of the VM went through (so users need no rights on Secrets), owned by the VM so
// that it goes with it; a Secret's type cannot change, so no other kind of Secret is overwritten.
import { Resources, type VirtualMachine } from "../crds/index.ts";
import { ownerReference } from "../runtime/objects.ts";
import { type Call, SECRET } from "./api.ts";
import { ApiError, ERROR } from "./envelope.ts";

/** The key of the user data in its Secret. */
export const USER_DATA_KEY = "userdata";
/** The key of the guest's password in the Secret spec.passwordSecret names. */
export const PASSWORD_KEY = "password";
/** 32 KiB decoded, as CloudStack allows with HTTP GET. */
const USER_DATA_MAX_BASE64 = 43_692;

/** The request's `userdata` (base64), checked as CloudStack checks it; undefined when none or empty. */
export function userDataParameter(call: Call): string | undefined {
  const userData = call.params.get("userdata");
  if (userData && (!/^[A-Za-z0-9+/]*={0,2}$/.test(userData) || userData.length > USER_DATA_MAX_BASE64))
    throw new ApiError(ERROR.PARAM, "userdata must be base64 and at most 32 KiB decoded");
  return userData || undefined;
}

/** The Secret the CloudStack API keeps a VM's user data in. */
export function userDataSecretName(vm: string): string {
  return `${vm}-userdata`;
}

/** Writes the VM's user data Secret; call it after the caller's write of the VM that names it. */
export async function writeUserData(call: Call, vm: VirtualMachine, userData: string): Promise<void> {
  await call.api.client.apply(
    SECRET,
    {
      metadata: {
        name: userDataSecretName(vm.metadata.name as string),
        namespace: vm.metadata.namespace as string,
        // The Secret never holds its VM's deletion back.
        ownerReferences: [{ ...ownerReference(Resources.virtualMachines, vm), blockOwnerDeletion: false }],
      },
      type: "stratus.io/user-data",
      data: { [USER_DATA_KEY]: userData },
    },
    { fieldManager: "stratus-apiserver" },
  );
}

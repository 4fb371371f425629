// A VM's user data lives in a Secret of its namespace (key `userdata`), never in the VM: every host
// agent may read every VM, but only the agent of the VM's host may read its user data (through
// virtualmachines/userdata, subresources.ts). The CloudStack API writes the Secret itself once the
// caller's own write of the VM went through (so users need no rights on Secrets), owned by the VM so
// that it goes with it; a Secret's type cannot change, so no other kind of Secret is overwritten.
import { Resources, type VirtualMachine } from "../crds/index.ts";
import { ownerReference } from "../runtime/objects.ts";
import { type Call, type CloudStackApi, SECRET } from "./api.ts";
import { ApiError, ERROR, entityNotFound } from "./envelope.ts";
import { cachedSoon, ownedByUid } from "./listing.ts";

/** The key of the user data in its Secret. */
export const USER_DATA_KEY = "userdata";
/** Stratus keeps user data in a Secret: 32 KiB decoded (CloudStack allows up to 1 MB by POST). */
export const USER_DATA_MAX_BYTES = 32 * 1024;
/** CloudStack's limit for user data in a query string (HTTP GET): 4 KiB of base64. */
export const USER_DATA_MAX_GET_BASE64 = 4096;

/** Base64 user data checked as CloudStack checks it: the GET and the POST limits; the reason when refused. */
export function userDataProblem(userData: string, sentInQuery: boolean): string | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(userData) || userData.length % 4 === 1)
    return "userdata must be base64 and at most 32 KiB decoded";
  if (sentInQuery && userData.length > USER_DATA_MAX_GET_BASE64)
    return `User data is too long for an http GET request: at most ${USER_DATA_MAX_GET_BASE64} characters of base64 in a query string; send it in a POST body (at most 32 KiB decoded)`;
  if (Buffer.byteLength(userData, "base64") > USER_DATA_MAX_BYTES)
    return `User data is too long: Stratus keeps at most 32 KiB decoded (${USER_DATA_MAX_BYTES} bytes)`;
  return undefined;
}

/** The request's `userdata` (base64), checked as CloudStack checks it; undefined when none or empty. */
export function userDataParameter(call: Call): string | undefined {
  const userData = call.params.get("userdata");
  if (!userData) return undefined;
  const problem = userDataProblem(userData, call.params.sentInQuery("userdata"));
  if (problem) throw new ApiError(ERROR.PARAM, problem);
  return userData;
}

/**
 * The user data a deploy or update asks for: `userdata` itself, or a copy of the registered user
 * data `userdataid` of the VM's account (another account's id is unknown: 431); undefined when none.
 */
export async function requestedUserData(call: Call, namespace: string): Promise<string | undefined> {
  if (Object.keys(call.params.raw).some((name) => name.toLowerCase().startsWith("userdatadetails")))
    throw new ApiError(
      ERROR.PARAM,
      "userdatadetails is not supported: Stratus does not fill in user data variables; send the user data as it should run",
    );
  const userData = userDataParameter(call);
  const id = call.params.get("userdataid");
  if (!id) return userData;
  if (userData) throw new ApiError(ERROR.PARAM, "Specify either userdata or userdataid, not both");
  if (!call.params.uuid("userdataid")) throw entityNotFound("userdataid", id);
  await cachedSoon(call.api.registeredUserData, id);
  const registered = await ownedByUid(
    call,
    call.api.registeredUserData,
    Resources.userData,
    "userdataid",
    id,
  );
  if (registered.metadata.namespace !== namespace) throw entityNotFound("userdataid", id);
  return registered.spec.userData;
}

/** The Secret the CloudStack API keeps a VM's user data in. */
export function userDataSecretName(vm: string): string {
  return `${vm}-userdata`;
}

/**
 * Writes a Secret the CloudStack API keeps for a VM (user data, password), owned by the VM; call it
 * after the caller's write of the VM that names it. `data` is base64, as a Secret holds it.
 */
export async function writeVmSecret(
  api: CloudStackApi,
  vm: VirtualMachine,
  secret: { name: string; type: string; data: Record<string, string> },
): Promise<void> {
  await api.client.apply(
    SECRET,
    {
      metadata: {
        name: secret.name,
        namespace: vm.metadata.namespace as string,
        // The Secret never holds its VM's deletion back.
        ownerReferences: [{ ...ownerReference(Resources.virtualMachines, vm), blockOwnerDeletion: false }],
      },
      type: secret.type,
      data: secret.data,
    },
    { fieldManager: "stratus-apiserver" },
  );
}

/** Writes the VM's user data Secret; call it after the caller's write of the VM that names it. */
export function writeUserData(call: Call, vm: VirtualMachine, userData: string): Promise<void> {
  return writeVmSecret(call.api, vm, {
    name: userDataSecretName(vm.metadata.name as string),
    type: "stratus.io/user-data",
    data: { [USER_DATA_KEY]: userData },
  });
}

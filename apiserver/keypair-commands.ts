// CloudStack's SSH key pairs over the SSHKeyPair kind of the caller's account (its namespace):
// register a public key, create a pair (the private key is answered once and never stored), list,
// delete, and the key pairs a VM names (deployVirtualMachine's keypair/keypairs,
// resetSSHKeyForVirtualMachine). A key pair of another account answers as one that does not exist.
import { displayState } from "../crds/display-state.ts";
import { Resources, type SSHKeyPair, sshKeyPairObjectName } from "../crds/index.ts";
import { generateRsaKeyPair, parseSshPublicKey, sshFingerprint } from "../crds/ssh-public-key.ts";
import { isConflict, isNotFound } from "../runtime/client.ts";
import type { Call, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { type GuestLoginSpec, setGuestLoginFields } from "./guest-login-fields.ts";
import { submitJob, virtualMachineOutcome } from "./jobs.ts";
import { inAccount, namespaced, ownedById, page, requiredOwnName } from "./listing.ts";

/** The job parameter resetSSHKeyForVirtualMachine records the key pairs it set in. */
const KEY_PAIRS_SET = "stratus.keypairs";

/** The name CloudStack shows: spec.name when the object is named after its digest. */
export const keyPairName = (pair: SSHKeyPair): string => pair.spec.name ?? (pair.metadata.name as string);

function keyPairView(pair: SSHKeyPair, fingerprint = pair.status?.fingerprint): Record<string, Json> {
  return {
    id: pair.metadata.uid as string,
    name: keyPairName(pair),
    ...(fingerprint ? { fingerprint } : {}),
    account: pair.metadata.namespace as string,
    domain: "ROOT",
  };
}

/**
 * The key pair of this CloudStack name in the namespace, as the caller may read it: from the cache,
 * else from the API server (one registered a moment ago may not be cached yet).
 */
async function findKeyPair(call: Call, namespace: string, name: string): Promise<SSHKeyPair | undefined> {
  const objectName = sshKeyPairObjectName(name);
  const pair =
    call.api.sshKeyPairs.get(`${namespace}/${objectName}`) ??
    (await call.caller.client
      .get<SSHKeyPair>(Resources.sshKeyPairs, objectName, namespace)
      .catch((error: unknown) => {
        if (isNotFound(error) || (error as { status?: number }).status === 403) return undefined;
        throw error;
      }));
  return pair && keyPairName(pair) === name ? pair : undefined;
}

/**
 * The object names of the key pairs `keypairs` (a list) and `keypair` name, in the VM's account
 * (CloudStack's 431 "was not found" for any other); undefined when the request names none.
 */
export async function requestedKeyPairs(call: Call, namespace: string): Promise<string[] | undefined> {
  const names = [
    ...call.params.list("keypairs"),
    ...(call.params.get("keypair") ? [call.params.get("keypair") as string] : []),
  ];
  if (names.length === 0) return undefined;
  if (names.length > 16) throw new ApiError(ERROR.PARAM, "A VM takes at most 16 key pairs");
  const objectNames = [];
  for (const name of new Set(names)) {
    const pair = await findKeyPair(call, namespace, name);
    if (!pair) throw new ApiError(ERROR.PARAM, `A key pair with name '${name}' was not found.`);
    objectNames.push(pair.metadata.name as string);
  }
  return [...new Set(objectNames)];
}

/** Creates the key pair as the caller; a name taken answers as CloudStack does. */
async function createKeyPair(call: Call, name: string, publicKey: string): Promise<SSHKeyPair> {
  const objectName = sshKeyPairObjectName(name);
  try {
    return await call.caller.client.create<SSHKeyPair>(Resources.sshKeyPairs, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "SSHKeyPair",
      metadata: {
        name: objectName,
        namespace: call.caller.account,
        annotations: { "stratus.io/created-by": "cloudstack-api" },
      },
      spec: { publicKey, ...(objectName === name ? {} : { name }) },
    });
  } catch (error) {
    if (isConflict(error)) throw new ApiError(ERROR.PARAM, `A key pair with name '${name}' already exists.`);
    throw error;
  }
}

const registerSSHKeyPair: Command = {
  async handler(call) {
    const name = requiredOwnName(call);
    const key = parseSshPublicKey(call.params.required("publickey"));
    if ("error" in key) throw new ApiError(ERROR.PARAM, `Public key is invalid: ${key.error}`);
    const fingerprint = sshFingerprint(key);
    const same = call.api.sshKeyPairs
      .list()
      .find((p) => p.metadata.namespace === call.caller.account && p.status?.fingerprint === fingerprint);
    if (same)
      throw new ApiError(
        ERROR.PARAM,
        `A key pair with the same public key already exists for this account: '${keyPairName(same)}'`,
      );
    const pair = await createKeyPair(call, name, key.line);
    return { keypair: keyPairView(pair, fingerprint) };
  },
};

const createSSHKeyPair: Command = {
  async handler(call) {
    const name = requiredOwnName(call);
    const generated = await generateRsaKeyPair(`${call.caller.account}@stratus`);
    const key = parseSshPublicKey(generated.publicKey);
    if ("error" in key) throw new Error(`generated an invalid public key: ${key.error}`);
    const pair = await createKeyPair(call, name, key.line);
    // The private key is answered here only: nothing keeps it.
    return { keypair: { ...keyPairView(pair, sshFingerprint(key)), privatekey: generated.privateKey } };
  },
};

const listSSHKeyPairs: Command = {
  async handler(call) {
    const id = call.params.uuid("id");
    const name = call.params.get("name");
    const fingerprint = call.params.get("fingerprint")?.toLowerCase();
    const keyword = call.params.get("keyword")?.toLowerCase();
    const pairs = inAccount(call, await namespaced(call, call.api.sshKeyPairs, Resources.sshKeyPairs))
      .filter((p) => !id || p.metadata.uid === id)
      .filter((p) => !name || keyPairName(p) === name)
      .filter((p) => !fingerprint || p.status?.fingerprint === fingerprint)
      .filter((p) => !keyword || keyPairName(p).toLowerCase().includes(keyword))
      .sort((a, b) => (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? ""));
    return page(
      call,
      "sshkeypair",
      pairs.map((p) => keyPairView(p)),
    );
  },
};

const deleteSSHKeyPair: Command = {
  async handler(call) {
    const name = requiredOwnName(call);
    const pair = await findKeyPair(call, call.caller.account, name);
    const missing = () =>
      new ApiError(
        ERROR.PARAM,
        `A key pair with name '${name}' does not exist for account ${call.caller.account} in specified domain id`,
      );
    if (!pair) throw missing();
    await call.caller.client
      .delete(Resources.sshKeyPairs, pair.metadata.name as string, pair.metadata.namespace, {
        uid: pair.metadata.uid as string,
      })
      .catch((error: unknown) => {
        if (isNotFound(error)) throw missing();
        throw error;
      });
    return { success: true };
  },
};

const resetSSHKeyForVirtualMachine: Command = {
  async: true,
  async handler(call) {
    const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
    const keyPairs = await requestedKeyPairs(call, vm.metadata.namespace as string);
    if (!keyPairs)
      throw new ApiError(
        ERROR.PARAM,
        "Unable to execute API command resetsshkeyforvirtualmachine due to missing parameter keypair",
      );
    if (displayState(vm) !== "Stopped")
      throw new ApiError(ERROR.PARAM, `Vm ${vm.metadata.name} should be stopped to do SSH Key reset`);
    await setGuestLoginFields(call, vm, { keyPairs });
    const job = await submitJob(call, "resetSSHKeyForVirtualMachine", vm, {
      [KEY_PAIRS_SET]: keyPairs.join(","),
    });
    return { jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    // Done once this replica's cache shows the change, so the answer lists the new key pairs.
    return virtualMachineOutcome(
      job,
      api,
      (vm) => ((vm.spec as GuestLoginSpec).keyPairs ?? []).join(",") === job.spec.parameters?.[KEY_PAIRS_SET],
    );
  },
};

export const KEY_PAIR_COMMANDS: Record<string, Command> = {
  registerSSHKeyPair,
  createSSHKeyPair,
  listSSHKeyPairs,
  deleteSSHKeyPair,
  resetSSHKeyForVirtualMachine,
};

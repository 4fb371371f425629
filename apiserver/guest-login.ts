// How a guest is logged into, as the CloudStack API sets it: the VM's key pairs (spec.keyPairs) and,
// for a password-enabled template, a generated password kept in a Secret `<vm>-password` (key
// `password`) owned by the VM, that only the API component writes and reads (the VM names it in
// spec.passwordSecret, never holds it). The password is answered once: in the result of the job that
// made it (deployVirtualMachine, resetPasswordForVirtualMachine), which only the account reads.
import { randomInt } from "node:crypto";
import { displayState } from "../crds/display-state.ts";
import { type AsyncJob, Resources, type Template, type VirtualMachine } from "../crds/index.ts";
import { isNotFound } from "../runtime/client.ts";
import { type Call, type CloudStackApi, type Command, SECRET, type Secret } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { type GuestLoginSpec, setGuestLoginFields } from "./guest-login-fields.ts";
import { jobObject, type Outcome, submitJob, virtualMachineOutcome } from "./jobs.ts";
import { requestedKeyPairs } from "./keypair-commands.ts";
import { ownedById } from "./listing.ts";
import { writeVmSecret } from "./user-data.ts";

export const VM_PASSWORD_KEY = "password";
const PASSWORD_SECRET_TYPE = "stratus.io/vm-password";
/** No look-alikes (0/O, 1/l/I): the password is often read off a screen and typed. */
const PASSWORD_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const PASSWORD_LENGTH = 16;
/** What CloudStack lets a user choose (resetPasswordForVirtualMachine password=). */
const PASSWORD_MAX_LENGTH = 255;
/** The commands whose job result carries the VM's password. */
const ANSWERS_PASSWORD = new Set(["deployVirtualMachine", "resetPasswordForVirtualMachine"]);

export const vmPasswordSecretName = (vm: string): string => `${vm}-password`;

export function generateVmPassword(): string {
  return Array.from(
    { length: PASSWORD_LENGTH },
    () => PASSWORD_ALPHABET[randomInt(PASSWORD_ALPHABET.length)],
  ).join("");
}

/** What deployVirtualMachine adds to the VM's spec (key pairs, password Secret), and the password. */
export async function deployGuestLogin(
  call: Call,
  template: Template,
  vmName: string,
): Promise<{ spec: GuestLoginSpec; password?: string }> {
  const keyPairs = await requestedKeyPairs(call, call.caller.account);
  const password = template.spec.passwordEnabled ? generateVmPassword() : undefined;
  return {
    spec: {
      ...(keyPairs ? { keyPairs } : {}),
      ...(password ? { passwordSecret: vmPasswordSecretName(vmName) } : {}),
    },
    ...(password ? { password } : {}),
  };
}

export function writeVmPassword(api: CloudStackApi, vm: VirtualMachine, password: string): Promise<void> {
  return writeVmSecret(api, vm, {
    name: vmPasswordSecretName(vm.metadata.name as string),
    type: PASSWORD_SECRET_TYPE,
    data: { [VM_PASSWORD_KEY]: Buffer.from(password).toString("base64") },
  });
}

/** A finished deploy or password reset answers the VM's current password, read from its Secret. */
export async function withVmPassword(api: CloudStackApi, job: AsyncJob, outcome: Outcome): Promise<Outcome> {
  if (!outcome || !("result" in outcome) || !ANSWERS_PASSWORD.has(job.spec.command)) return outcome;
  const vm = jobObject(api.vms, job, job.spec.target?.uid);
  const secretName = vm ? (vm.spec as GuestLoginSpec).passwordSecret : undefined;
  const view = (outcome.result as { virtualmachine?: Record<string, Json> }).virtualmachine;
  if (!vm || !secretName || !view) return outcome;
  const secret = await api.client
    .get<Secret & { type?: string }>(SECRET, secretName, vm.metadata.namespace)
    .catch((error: unknown) => {
      if (isNotFound(error)) return undefined;
      throw error;
    });
  const encoded = secret?.type === PASSWORD_SECRET_TYPE ? secret.data?.[VM_PASSWORD_KEY] : undefined;
  if (!encoded) return outcome;
  return { result: { virtualmachine: { ...view, password: Buffer.from(encoded, "base64").toString() } } };
}

const resetPasswordForVirtualMachine: Command = {
  async: true,
  async handler(call) {
    const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
    const template = call.api.templates.get(vm.spec.template);
    if (!template?.spec.passwordEnabled)
      throw new ApiError(
        ERROR.PARAM,
        "Fail to reset password for the virtual machine, the template is not password enabled",
      );
    if (displayState(vm) !== "Stopped")
      throw new ApiError(ERROR.PARAM, `Vm ${vm.metadata.name} should be stopped to do password reset`);
    const chosen = call.params.get("password");
    if (chosen !== undefined && (chosen.length === 0 || chosen.length > PASSWORD_MAX_LENGTH))
      throw new ApiError(ERROR.PARAM, `A password has 1 to ${PASSWORD_MAX_LENGTH} characters`);
    const password = chosen ?? generateVmPassword();
    const passwordSecret = vmPasswordSecretName(vm.metadata.name as string);
    const current =
      (vm.spec as GuestLoginSpec).passwordSecret === passwordSecret
        ? vm
        : await setGuestLoginFields(call, vm, { passwordSecret });
    await writeVmPassword(call.api, current, password);
    const job = await submitJob(call, "resetPasswordForVirtualMachine", current);
    return { jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    return virtualMachineOutcome(job, api, (vm) => (vm.spec as GuestLoginSpec).passwordSecret !== undefined);
  },
};

export const GUEST_LOGIN_COMMANDS: Record<string, Command> = { resetPasswordForVirtualMachine };

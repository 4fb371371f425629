// CloudStack's ISO commands: ISOs are Templates of format iso (registered, listed and deleted as
// templates are, by administrators), put in a VM's ISO drive with attachIso (spec.iso) and taken
// out with detachIso. A running guest has its disc swapped by its host's agent, and the job ends
// when the agent reports the drive (status.iso); a stopped VM gets it at its next start.
import { displayState } from "../crds/display-state.ts";
import { Resources, type Template, type VirtualMachine } from "../crds/index.ts";
import { isIso } from "../crds/template-images.ts";
import type { Call, Command } from "./api.ts";
import { ApiError, ERROR } from "./envelope.ts";
import { jobObject, submitJob, virtualMachineOutcome } from "./jobs.ts";
import { byId, ownedById } from "./listing.ts";
import { registerImage, TEMPLATE_COMMANDS } from "./template-commands.ts";

/** The job parameter attachIso and detachIso record the wanted disc in ("" for none). */
const WANTED_ISO = "stratus.iso";

/** An ISO by its id, refused as CloudStack refuses a template id where an ISO is asked for. */
export function isoById(call: Call, parameter = "id"): Template {
  const iso = byId(call.api.templates, call, parameter);
  if (!isIso(iso))
    throw new ApiError(
      ERROR.PARAM,
      `Template ${iso.metadata.name} is a disk image, not an ISO: ${parameter} names an ISO (listIsos)`,
    );
  return iso;
}

/** Puts `iso` in the VM's drive (undefined: takes it out), then a job that ends when it is so. */
async function setIso(call: Call, command: string, vm: VirtualMachine, iso: string | undefined) {
  await call.caller.client.mergePatch(
    Resources.virtualMachines,
    vm.metadata.name as string,
    vm.metadata.namespace,
    { spec: { iso: iso ?? null } },
  );
  const job = await submitJob(call, command, vm, { [WANTED_ISO]: iso ?? "" });
  return { jobid: job.metadata.uid as string };
}

/** Ready reasons with which a host says it cannot put the disc in the drive. */
const DISC_PROBLEMS = [
  "IsoDriveMissing",
  "IsoNotFound",
  "NotAnIso",
  "ImageUnreadable",
  "DownloadFailed",
  "ChecksumMismatch",
  "ImageTooLarge",
  "UnsafeImage",
  "WrongImageFormat",
];

/**
 * A running guest's drive must show the disc (the agent swapped it); a stopped VM's spec suffices.
 * A host that cannot do it says why on the VM, and the job fails with that.
 */
const isoOutcome: Command["outcome"] = (job, api) => {
  const wanted = job.spec.parameters?.[WANTED_ISO] || undefined;
  const done = virtualMachineOutcome(job, api, (vm) => {
    if ((vm.spec.iso ?? undefined) !== wanted) return false;
    return displayState(vm) !== "Running" || vm.status?.iso === wanted;
  });
  if (done) return done;
  const vm = jobObject(api.vms, job, job.spec.target?.uid);
  const ready = vm?.status?.conditions?.find((c) => c.type === "Ready");
  if (ready?.status === "False" && DISC_PROBLEMS.includes(ready.reason))
    return { error: { code: ERROR.RESOURCE_UNAVAILABLE, text: ready.message ?? ready.reason } };
  return undefined;
};

const attachIso: Command = {
  async: true,
  async handler(call) {
    const iso = isoById(call);
    const vm = await ownedById(call, call.api.vms, Resources.virtualMachines, "virtualmachineid");
    if (vm.spec.iso)
      throw new ApiError(
        ERROR.PARAM,
        `VM ${vm.metadata.name} already has ISO ${vm.spec.iso} attached; detach it first (detachIso)`,
      );
    return setIso(call, "attachIso", vm, iso.metadata.name as string);
  },
  outcome: isoOutcome,
};

const detachIso: Command = {
  async: true,
  async handler(call) {
    const vm = await ownedById(call, call.api.vms, Resources.virtualMachines, "virtualmachineid");
    if (!vm.spec.iso) throw new ApiError(ERROR.PARAM, `VM ${vm.metadata.name} has no ISO attached`);
    return setIso(call, "detachIso", vm, undefined);
  },
  outcome: isoOutcome,
};

/** A command on an ISO that is the template command of the same name once the id is checked. */
function onIso(command: Command): Command {
  return {
    ...command,
    handler(call) {
      isoById(call);
      return command.handler(call);
    },
  };
}

export const ISO_COMMANDS: Record<string, Command> = {
  registerIso: { handler: (call) => registerImage(call, "iso") },
  updateIso: onIso(TEMPLATE_COMMANDS.updateTemplate as Command),
  deleteIso: onIso(TEMPLATE_COMMANDS.deleteTemplate as Command),
  attachIso,
  detachIso,
};

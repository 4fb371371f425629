// CloudStack's createTemplate (from a stopped VM's volume, a detached volume, or a snapshot) and
// deleteTemplate over the cluster's Templates. Templates are cluster-wide, so only administrators
// (RBAC create/delete on templates) make them, and only from volumes and snapshots of accounts
// they may read. The agent holding the source writes the image (status.image); this file asks and
// watches.
import { displayState } from "../crds/display-state.ts";
import { Resources, type Template } from "../crds/index.ts";
import { isNotFound } from "../runtime/client.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR } from "./envelope.ts";
import { jobObject, submitJob } from "./jobs.ts";
import { byId, ownedById } from "./listing.ts";
import { volumeHolder } from "./snapshot-commands.ts";
import { templateView } from "./views.ts";

/** A template name is the object's name: a DNS label (CloudStack's free text is the display text). */
const TEMPLATE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** What the template is made from, checked as CloudStack checks it: a Ready, unused source. */
async function templateSource(call: Call): Promise<{ zone: string; source: Template["spec"]["source"] }> {
  const { params, api } = call;
  if (params.get("url"))
    throw new ApiError(
      ERROR.PARAM,
      "createTemplate: url is not supported; add a Template with spec.source.url",
    );
  if (params.uuid("volumeid") && params.uuid("snapshotid"))
    throw new ApiError(ERROR.PARAM, "Specify only one of volumeid and snapshotid");
  if (params.uuid("snapshotid")) {
    const snapshot = await ownedById(call, api.volumeSnapshots, Resources.volumeSnapshots, "snapshotid");
    if (snapshot.status?.phase !== "Ready" || !snapshot.status.zone)
      throw new ApiError(
        ERROR.PARAM,
        `Snapshot ${snapshot.metadata.name} is not backed up yet; a template is made from a BackedUp snapshot`,
      );
    const ref = { namespace: snapshot.metadata.namespace as string, name: snapshot.metadata.name as string };
    return { zone: snapshot.status.zone, source: { snapshot: ref } };
  }
  if (!params.uuid("volumeid"))
    throw new ApiError(ERROR.PARAM, "Specify a volumeid or a snapshotid to create the template from");
  const volume = await ownedById(call, api.volumes, Resources.volumes, "volumeid");
  const phase = volume.status?.phase;
  if (phase !== "Ready" && phase !== "Attached")
    throw new ApiError(
      ERROR.PARAM,
      `Volume ${volume.metadata.name} is not in Ready state but ${phase ?? "Allocated"}`,
    );
  const vm = volumeHolder(api, volume);
  if (vm && displayState(vm) !== "Stopped")
    throw new ApiError(
      ERROR.PARAM,
      `Volume ${volume.metadata.name} is attached to VM ${vm.metadata.name}, which is ${displayState(vm)}: a template is made from a stopped VM's volume; stop it first`,
    );
  const ref = { namespace: volume.metadata.namespace as string, name: volume.metadata.name as string };
  return { zone: volume.spec.zone, source: { volume: ref } };
}

const createTemplate: Command = {
  async: true,
  async handler(call) {
    const { params } = call;
    const name = params.required("name").toLowerCase();
    const displayText = params.required("displaytext");
    const osType = params.required("ostypeid");
    if (!TEMPLATE_NAME.test(name))
      throw new ApiError(
        ERROR.PARAM,
        `Invalid parameter name value=${name}: a template name has 1 to 63 lower-case letters, digits and hyphens`,
      );
    if (displayText.length > 255 || osType.length > 255)
      throw new ApiError(ERROR.PARAM, "displaytext and ostypeid are at most 255 characters");
    const { zone, source } = await templateSource(call);
    const template = await call.caller.client.create<Template>(Resources.templates, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Template",
      metadata: { name, annotations: { "stratus.io/created-by": "cloudstack-api" } },
      spec: {
        displayName: displayText,
        source,
        format: "qcow2",
        osType,
        zones: [zone],
        passwordEnabled: params.flag("passwordenabled"),
      },
    });
    const job = await submitJob(call, "createTemplate", { ...template, kind: "Template" });
    return { id: template.metadata.uid as string, jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    const template = jobObject(api.templates, job, job.spec.target?.uid);
    if (!template) return { error: { code: ERROR.INTERNAL, text: "the template was deleted" } };
    const zone = template.spec.zones?.[0] ? api.zones.get(template.spec.zones[0]) : undefined;
    if (template.status?.image) return { result: { template: templateView(template, zone) } };
    const ready = template.status?.conditions?.find((c) => c.type === "Ready");
    if (ready?.status === "False" && ready.reason !== "NoSecondaryStorage")
      return { error: { code: ERROR.INTERNAL, text: `Failed to create template: ${ready.message}` } };
    return undefined;
  },
};

/** CloudStack refuses to delete a template VMs use (Stratus also when forced: their disks need it). */
function requireUnused(api: CloudStackApi, template: Template): void {
  const name = template.metadata.name as string;
  const users = [
    ...api.vms.list().filter((vm) => vm.spec.template === name),
    ...api.volumes.list().filter((v) => v.spec.source?.template === name),
  ].map((o) => `${o.metadata.namespace}/${o.metadata.name}`);
  if (users.length > 0)
    throw new ApiError(
      ERROR.PARAM,
      `Unable to delete template with id: ${template.metadata.uid} because VM instances: [${[...new Set(users)].slice(0, 20).join(", ")}] are using it.`,
    );
}

const deleteTemplate: Command = {
  async: true,
  async handler(call) {
    const template = byId(call.api.templates, call, "id");
    requireUnused(call.api, template);
    await call.caller.client
      .delete(Resources.templates, template.metadata.name as string, undefined, {
        uid: template.metadata.uid as string,
      })
      .catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
    const job = await submitJob(call, "deleteTemplate", { ...template, kind: "Template" });
    return { jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    return jobObject(api.templates, job, job.spec.target?.uid) ? undefined : { result: { success: true } };
  },
};

export const TEMPLATE_COMMANDS: Record<string, Command> = { createTemplate, deleteTemplate };

// CloudStack's createTemplate (from a stopped VM's volume, a detached volume, or a snapshot) and
// deleteTemplate over the cluster's Templates. Templates are cluster-wide, so only administrators
// (RBAC create/delete on templates) make them, and only from volumes and snapshots of accounts
// they may read. The agent holding the source writes the image (status.image); this file asks and
// watches.
import { displayState } from "../crds/display-state.ts";
import { Resources, type Template, type Zone } from "../crds/index.ts";
import { probeDownload } from "../host-agent/images.ts";
import { isNotFound } from "../runtime/client.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, listBody } from "./envelope.ts";
import { jobObject, submitJob } from "./jobs.ts";
import { byId, ownedById, patched } from "./listing.ts";
import { volumeHolder } from "./snapshot-commands.ts";
import {
  refuseUnsupportedRegistration,
  registrationZones,
  requireKvm,
  shortText,
  templateChecksum,
  templateFormat,
  templateName,
  templateUpdate,
} from "./template-input.ts";
import { templateView } from "./views.ts";

/** A Template the CloudStack API makes (the annotation says who made it). */
function apiTemplate(name: string, spec: Template["spec"]): Template {
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Template",
    metadata: { name, annotations: { "stratus.io/created-by": "cloudstack-api" } },
    spec,
  };
}

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
    const name = templateName(params.required("name"));
    const displayText = shortText("displaytext", params.required("displaytext"));
    const osType = shortText("ostypeid", params.required("ostypeid"));
    const { zone, source } = await templateSource(call);
    const template = await call.caller.client.create<Template>(
      Resources.templates,
      apiTemplate(name, {
        displayName: displayText,
        source,
        format: "qcow2",
        osType,
        zones: [zone],
        passwordEnabled: params.flag("passwordenabled"),
      }),
    );
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
    ...api.vms.list().filter((vm) => vm.spec.template === name || vm.spec.iso === name),
    ...api.volumes.list().filter((v) => v.spec.source?.template === name),
  ].map((o) => `${o.metadata.namespace}/${o.metadata.name}`);
  if (users.length > 0)
    throw new ApiError(
      ERROR.PARAM,
      `Unable to delete template with id: ${template.metadata.uid} because VM instances: [${[...new Set(users)].slice(0, 20).join(", ")}] are using it.`,
    );
}

/**
 * CloudStack's registerTemplate: a URL image every zone asked for downloads once onto its secondary
 * storage (the agents do, status.zones). Only administrators register (templates are cluster-wide),
 * and that is checked before the URL is fetched, so nobody else can make this server fetch a URL.
 */
const registerTemplate: Command = { handler: (call) => registerImage(call, "template") };

/**
 * registerTemplate and registerIso: a disk image of the format asked for, or an ISO (bootable
 * unless `bootable=false`), answered as CloudStack answers each (`template` or `iso` entries).
 */
export async function registerImage(call: Call, kind: "template" | "iso") {
  const { params, api } = call;
  if (!(await api.can(call.caller, "create", Resources.templates)))
    throw new ApiError(
      ERROR.ACCOUNT,
      `Account ${call.caller.account} may not register ${kind}s: ${kind}s are cluster-wide, registered by administrators`,
    );
  const get = (name: string) => params.get(name);
  const name = templateName(params.required("name"));
  const displayText = shortText("displaytext", params.required("displaytext"));
  const url = params.required("url");
  const format = kind === "iso" ? "iso" : templateFormat(params.required("format"));
  if (kind === "template") requireKvm(params.required("hypervisor"));
  const checksum = templateChecksum(get("checksum"));
  const osType = get("ostypeid") ? shortText("ostypeid", get("ostypeid") as string) : undefined;
  refuseUnsupportedRegistration(get, Object.keys(params.raw));
  const zones = registrationZones(get, (id) => api.zones.byIndex("uid", id)[0]?.metadata.name);
  if (!/^https?:\/\/[^/]/i.test(url))
    throw new ApiError(ERROR.PARAM, `Unsupported URL ${url}: a template URL is http:// or https://`);
  if (api.templates.get(name))
    throw new ApiError(ERROR.PARAM, `A template named ${name} already exists; choose another name`);
  await probeDownload(url).catch((error: unknown) => {
    throw new ApiError(ERROR.PARAM, `Unable to register template ${name}: ${(error as Error).message}`);
  });
  const template = await call.caller.client.create<Template>(
    Resources.templates,
    apiTemplate(name, {
      displayName: displayText,
      source: { url },
      format,
      ...(checksum ? { checksum } : {}),
      ...(osType ? { osType } : {}),
      ...(zones ? { zones } : {}),
      ...(kind === "iso" ? { bootable: params.flag("bootable", true) } : {}),
      passwordEnabled: params.flag("passwordenabled"),
    }),
  );
  // CloudStack answers one entry per zone the template is registered in.
  const shown: (Zone | undefined)[] = zones ? zones.map((zone) => api.zones.get(zone)) : api.zones.list();
  const entries = shown.map((zone) => templateView(template, zone));
  return listBody(kind, entries, entries.length);
}

const updateTemplate: Command = {
  async handler(call) {
    const template = byId(call.api.templates, call, "id");
    const updated = await patched(
      call,
      Resources.templates,
      template,
      templateUpdate(template, (name) => call.params.get(name)),
    );
    // The first zone it is offered in, as CloudStack answers with one of the template's zones.
    const [first] = updated.spec.zones ?? [];
    const zone = first ? call.api.zones.get(first) : call.api.zones.list()[0];
    return { template: templateView(updated, zone) };
  },
};

const deleteTemplate: Command = {
  async: true,
  async handler(call) {
    const template = byId(call.api.templates, call, "id");
    // A template is one object in all its zones: removing it from one zone alone is not possible.
    const zoneId = call.params.uuid("zoneid");
    const zone = zoneId ? call.api.zones.byIndex("uid", zoneId)[0] : undefined;
    if (zoneId && !zone) throw new ApiError(ERROR.PARAM, `Unable to find zone by id ${zoneId}`);
    const offeredIn = template.spec.zones ?? call.api.zones.list().map((z) => z.metadata.name as string);
    if (zone && offeredIn.join() !== zone.metadata.name)
      throw new ApiError(
        ERROR.PARAM,
        `Template ${template.metadata.name} is in more zones than ${zone.metadata.name}: Stratus deletes a template from all its zones at once; leave zoneid out`,
      );
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

export const TEMPLATE_COMMANDS: Record<string, Command> = {
  createTemplate,
  registerTemplate,
  updateTemplate,
  deleteTemplate,
};

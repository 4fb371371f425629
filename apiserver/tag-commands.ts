// CloudStack's tag commands (createTags, deleteTags, listTags) over the caller's VMs, volumes and
// networks: an object's tags are kept in one annotation on it (views.ts reads them back).
import { Resources } from "../crds/index.ts";
import type { KubeObject, ResourceType } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { submitJob } from "./jobs.ts";
import { namespaced, ownedByUid, page } from "./listing.ts";
import { TAGS_ANNOTATION, tagsOf, tagsView } from "./views.ts";

/** Tags: kept in one annotation of the tagged object; CloudStack resource types map to kinds. */
const TAGGABLE: Record<
  string,
  { type: ResourceType; informer: (api: CloudStackApi) => Informer<KubeObject>; name: string }
> = {
  uservm: {
    type: Resources.virtualMachines,
    informer: (api) => api.vms as unknown as Informer<KubeObject>,
    name: "UserVm",
  },
  volume: {
    type: Resources.volumes,
    informer: (api) => api.volumes as unknown as Informer<KubeObject>,
    name: "Volume",
  },
  network: {
    type: Resources.networks,
    informer: (api) => api.networks as unknown as Informer<KubeObject>,
    name: "Network",
  },
};

function taggable(call: Call) {
  const resourceType = call.params.required("resourcetype");
  const kind = TAGGABLE[resourceType.toLowerCase()];
  if (!kind)
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter resourcetype value=${resourceType}: Stratus tags ${Object.values(TAGGABLE)
        .map((t) => t.name)
        .join(", ")}`,
    );
  return kind;
}

async function changeTags(
  call: Call,
  command: string,
  change: (tags: Record<string, string>) => void,
): Promise<Json> {
  const kind = taggable(call);
  const ids = call.params.list("resourceids");
  if (ids.length === 0)
    throw new ApiError(ERROR.PARAM, "Unable to execute API command due to missing parameter resourceids");
  for (const id of ids) {
    const object = await ownedByUid(call, kind.informer(call.api), kind.type, "resourceids", id);
    const tags = tagsOf(object);
    change(tags);
    await call.caller.client.mergePatch(
      kind.type,
      object.metadata.name as string,
      object.metadata.namespace,
      {
        metadata: { annotations: { [TAGS_ANNOTATION]: JSON.stringify(tags) } },
      },
    );
  }
  const job = await submitJob(call, command, {
    kind: "ResourceTag",
    metadata: { namespace: call.caller.account, name: ids.join(",").slice(0, 253) },
  });
  return { jobid: job.metadata.uid as string };
}

export const TAG_COMMANDS: Record<string, Command> = {
  createTags: {
    async: true,
    handler: (call) => {
      const entries = call.params.map("tags");
      if (entries.length === 0)
        throw new ApiError(
          ERROR.PARAM,
          "Unable to execute API command createtags due to missing parameter tags",
        );
      return changeTags(call, "createTags", (tags) => {
        for (const entry of entries) if (entry.key) tags[entry.key] = entry.value ?? "";
      });
    },
  },
  deleteTags: {
    async: true,
    handler: (call) => {
      const entries = call.params.map("tags");
      return changeTags(call, "deleteTags", (tags) => {
        if (entries.length === 0) for (const key of Object.keys(tags)) delete tags[key];
        for (const entry of entries)
          if (entry.key && (entry.value === undefined || tags[entry.key] === entry.value))
            delete tags[entry.key];
      });
    },
  },
  listTags: {
    async handler(call) {
      const wanted = call.params.get("resourcetype")?.toLowerCase();
      const resourceId = call.params.get("resourceid")?.toLowerCase();
      const key = call.params.get("key");
      const value = call.params.get("value");
      const entries: Json[] = [];
      for (const [type, kind] of Object.entries(TAGGABLE)) {
        if (wanted && wanted !== type) continue;
        const objects = await namespaced(call, kind.informer(call.api), kind.type);
        for (const object of objects)
          if (!resourceId || object.metadata.uid === resourceId)
            entries.push(
              ...tagsView(object, kind.name).filter(
                (tag) =>
                  (!key || (tag as Record<string, Json>).key === key) &&
                  (!value || (tag as Record<string, Json>).value === value),
              ),
            );
      }
      return page(call, "tag", entries);
    },
  },
};

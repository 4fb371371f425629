// Creating CloudStack's offerings as DiskOffering and ServiceOffering objects, with where their
// volumes live (`storagetype`, storage `tags`). Admin-only by RBAC: a user who may not create
// offerings gets Kubernetes' 403 as CloudStack's 531.
import { type DiskOffering, Resources, type ServiceOffering } from "../crds/index.ts";
import type { Call, Command } from "./api.ts";
import { ApiError, ERROR } from "./envelope.ts";
import { storageType, tagList } from "./storage-input.ts";
import { diskOfferingView, serviceOfferingView } from "./views.ts";

const OFFERING_NAME = /^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/;
const MAX_DISPLAY_TEXT = 255;

/** The offering object: name (an object name), displaytext, storagetype, and the kind's own spec. */
function offeringObject<K extends "DiskOffering" | "ServiceOffering", S extends object>(
  kind: K,
  basics: ReturnType<typeof offeringBasics>,
  spec: S,
) {
  return {
    apiVersion: "stratus.io/v1alpha1" as const,
    kind,
    metadata: basics.metadata,
    spec: { ...basics.spec, ...spec },
  };
}

function offeringBasics(call: Call) {
  const name = call.params.required("name").toLowerCase();
  const displayName = call.params.required("displaytext");
  if (!OFFERING_NAME.test(name))
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter name value=${name}: an offering name has 1 to 63 lower-case letters, digits, dots and hyphens`,
    );
  if (displayName.length > MAX_DISPLAY_TEXT)
    throw new ApiError(ERROR.PARAM, `Invalid parameter displaytext: at most ${MAX_DISPLAY_TEXT} characters`);
  const type = storageType(call.params.get("storagetype"));
  return {
    metadata: { name, annotations: { "stratus.io/created-by": "cloudstack-api" } },
    spec: { displayName, ...(type ? { storageType: type } : {}) },
  };
}

function positive(call: Call, name: string, max: number): number | undefined {
  const value = call.params.integer(name);
  if (value !== undefined && (value < 1 || value > max))
    throw new ApiError(ERROR.PARAM, `Invalid parameter ${name} value=${value}: it is 1 to ${max}`);
  return value;
}

export const OFFERING_COMMANDS: Record<string, Command> = {
  createDiskOffering: {
    async handler(call) {
      const basics = offeringBasics(call);
      const size = positive(call, "disksize", 65_536);
      if (size === undefined && !call.params.flag("customized"))
        throw new ApiError(
          ERROR.PARAM,
          "Unable to execute API command creatediskoffering due to missing parameter disksize (or customized=true)",
        );
      const tags = tagList("tags", call.params.get("tags"));
      const offering = await call.caller.client.create<DiskOffering>(
        Resources.diskOfferings,
        offeringObject("DiskOffering", basics, {
          ...(size !== undefined ? { size: `${size}Gi` } : {}),
          ...(tags?.length ? { tags } : {}),
        }),
      );
      return { diskoffering: diskOfferingView(offering) };
    },
  },
  createServiceOffering: {
    async handler(call) {
      const basics = offeringBasics(call);
      const cpu = positive(call, "cpunumber", 256);
      const memory = positive(call, "memory", 4 * 1024 * 1024);
      if (cpu === undefined || memory === undefined)
        throw new ApiError(
          ERROR.PARAM,
          `Unable to execute API command createserviceoffering due to missing parameter ${cpu === undefined ? "cpunumber" : "memory"} (Stratus has no custom offerings)`,
        );
      const speed = positive(call, "cpuspeed", 10_000);
      // CloudStack's `tags` on a service offering are the ROOT volume's storage tags.
      const storage = tagList("tags", call.params.get("tags") ?? call.params.get("storagetags"));
      const hostTags = tagList("hosttags", call.params.get("hosttags"));
      const offering = await call.caller.client.create<ServiceOffering>(
        Resources.serviceOfferings,
        offeringObject("ServiceOffering", basics, {
          cpu,
          memory: `${memory}Mi`,
          ...(speed !== undefined ? { cpuSpeedMHz: speed } : {}),
          ...(call.params.flag("offerha") ? { highAvailability: true } : {}),
          ...(hostTags?.length ? { hostTags } : {}),
          ...(storage?.length ? { storageTags: storage } : {}),
        }),
      );
      return { serviceoffering: serviceOfferingView(offering) };
    },
  },
};

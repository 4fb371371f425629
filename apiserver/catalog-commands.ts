// CloudStack's catalog commands: what a caller may choose from, not what it owns. Zones and
// service and disk offerings list from their cluster-scoped kinds for anyone RBAC lets list them;
// templates list once per zone they are available in; the network offering, capabilities, domain
// and OS types are what Stratus has (one offering, the ROOT domain, the templates' OS types).
import { Resources } from "../crds/index.ts";
import { isIso } from "../crds/template-images.ts";
import type { KubeObject, ResourceType } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { entityNotFound, type Json, ROOT_DOMAIN_ID } from "./envelope.ts";
import { filtered, page, requireClusterRead } from "./listing.ts";
import {
  diskOfferingView,
  NETWORK_OFFERING_ID,
  networkOfferingView,
  serviceOfferingView,
  templateAvailability,
  templateView,
  zoneView,
} from "./views.ts";

/** A list of a cluster-scoped catalog kind (zones, offerings), for anyone RBAC lets list it. */
function catalogList<T extends KubeObject & { spec: { displayName?: string } }>(
  type: ResourceType,
  informer: (api: CloudStackApi) => Informer<T>,
  itemKey: string,
  view: (object: T) => Json,
): Command {
  return {
    async handler(call) {
      await requireClusterRead(call, type);
      return page(
        call,
        itemKey,
        filtered(call, informer(call.api).list(), (o) => o.spec.displayName).map(view),
      );
    },
  };
}

/**
 * listTemplates (disk images) and listIsos (ISOs, `bootable` filtering): one entry per image and
 * zone it is available in, as CloudStack lists them.
 */
async function listImages(call: Call, kind: "template" | "iso"): Promise<Json> {
  await requireClusterRead(call, Resources.templates);
  const zoneId = call.params.uuid("zoneid");
  const zones = zoneId ? call.api.zones.byIndex("uid", zoneId) : call.api.zones.list();
  if (zoneId && zones.length === 0) throw entityNotFound("zoneid", zoneId);
  const flag = (name: string) => (call.params.get(name) === undefined ? undefined : call.params.flag(name));
  const isready = flag("isready");
  const bootable = kind === "iso" ? flag("bootable") : undefined;
  const images = filtered(call, call.api.templates.list(), (t) => t.spec.displayName).filter(
    (t) =>
      isIso(t) === (kind === "iso") && (bootable === undefined || (t.spec.bootable ?? true) === bootable),
  );
  const entries = images.flatMap((t) =>
    zones
      .filter((z) => !t.spec.zones?.length || t.spec.zones.includes(z.metadata.name as string))
      .filter((z) => isready === undefined || templateAvailability(t, z).ready === isready)
      .map((z) => templateView(t, z)),
  );
  return page(call, kind, entries);
}

export const CATALOG_COMMANDS: Record<string, Command> = {
  listZones: catalogList(Resources.zones, (api) => api.zones, "zone", zoneView),
  listServiceOfferings: catalogList(
    Resources.serviceOfferings,
    (api) => api.serviceOfferings,
    "serviceoffering",
    serviceOfferingView,
  ),
  listDiskOfferings: catalogList(
    Resources.diskOfferings,
    (api) => api.diskOfferings,
    "diskoffering",
    diskOfferingView,
  ),
  listTemplates: {
    async handler(call) {
      call.params.required("templatefilter");
      return listImages(call, "template");
    },
  },
  listIsos: { handler: (call) => listImages(call, "iso") },
  listNetworkOfferings: {
    async handler(call) {
      const id = call.params.get("id");
      const name = call.params.get("name");
      const offering = networkOfferingView() as Record<string, Json>;
      const matches = (!id || id === NETWORK_OFFERING_ID) && (!name || name === offering.name);
      return page(call, "networkoffering", matches ? [offering] : []);
    },
  },
  listCapabilities: {
    async handler() {
      return {
        capability: {
          cloudstackversion: "4.20.0-stratus",
          securitygroupsenabled: false,
          userpublictemplateenabled: false,
          supportELB: "false",
          projectinviterequired: false,
          allowusercreateprojects: false,
          customdiskofferingminsize: 1,
          customdiskofferingmaxsize: 65_536,
          kvmsnapshotenabled: false,
          apilimitinterval: 1,
          apilimitmax: 0,
          dynamicrolesenabled: false,
        },
      };
    },
  },
  listDomains: {
    async handler(call) {
      return page(call, "domain", [
        { id: ROOT_DOMAIN_ID, name: "ROOT", level: 0, path: "ROOT", haschild: false },
      ]);
    },
  },
  listOsTypes: {
    async handler(call) {
      const names = [
        ...new Set(call.api.templates.list().map((t) => t.spec.osType ?? "Other Linux (64-bit)")),
      ].sort();
      return page(
        call,
        "ostype",
        names.map((name) => ({ id: name, description: name, oscategoryid: "linux", isuserdefined: false })),
      );
    },
  },
};

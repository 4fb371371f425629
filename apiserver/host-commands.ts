// CloudStack's host commands over Host objects: list, maintenance, and an administrator's
// declaration that a lost host runs nothing any more (declareHostAsDegraded, after which its VMs
// start elsewhere). Authorization is RBAC on hosts: a user without it gets CloudStack's 531.
import { type Host, Resources } from "../crds/index.ts";
import type { Call, Command } from "./api.ts";
import { ApiError, ERROR } from "./envelope.ts";
import { hostState, hostView, hypervisorName } from "./host-views.ts";
import { byId, filtered, page, requireClusterRead } from "./listing.ts";
import { specToggleCommand } from "./spec-toggle.ts";

async function hostById(call: Call): Promise<Host> {
  await requireClusterRead(call, Resources.hosts);
  return byId(call.api.hosts, call, "id");
}

const described = (host: Host) => `host [id=${host.metadata.uid}, name=${host.metadata.name}]`;
const resourceState = (host: Host) => host.status?.resourceState ?? "Enabled";
const MAINTENANCE_STATES = new Set(["PrepareForMaintenance", "Maintenance", "ErrorInMaintenance"]);

function hostToggle(
  command: string,
  field: "maintenance" | "degraded",
  value: boolean,
  refusal: (host: Host) => string | undefined,
  done: (host: Host) => boolean,
): Command {
  return specToggleCommand<Host>({
    command,
    type: Resources.hosts,
    field,
    value,
    find: hostById,
    informer: (api) => api.hosts,
    refusal,
    done,
    result: (host, api) => ({ host: hostView(host, api) }),
  });
}

export const HOST_COMMANDS: Record<string, Command> = {
  listHosts: {
    async handler(call) {
      await requireClusterRead(call, Resources.hosts);
      const { params, api } = call;
      const zoneId = params.uuid("zoneid");
      const state = params.get("state")?.toLowerCase();
      const resource = params.get("resourcestate")?.toLowerCase();
      const hypervisor = params.get("hypervisor")?.toLowerCase();
      const vmId = params.uuid("virtualmachineid");
      const vmHost = vmId ? api.vms.byIndex("uid", vmId)[0]?.status?.host : undefined;
      const type = params.get("type");
      // Stratus has no pods or clusters, and every host is a hypervisor (Routing) host.
      const none =
        params.get("clusterid") !== undefined ||
        params.get("podid") !== undefined ||
        (type !== undefined && type.toLowerCase() !== "routing") ||
        (vmId !== undefined && vmHost === undefined);
      const hosts = filtered(call, none ? [] : api.hosts.list())
        .filter((h) => !zoneId || api.zones.get(h.spec.zone)?.metadata.uid === zoneId)
        .filter((h) => !state || hostState(h).toLowerCase() === state)
        .filter((h) => !resource || resourceState(h).toLowerCase() === resource)
        .filter((h) => !hypervisor || hypervisorName(h).toLowerCase() === hypervisor)
        .filter((h) => !vmHost || h.metadata.name === vmHost);
      return page(
        call,
        "host",
        hosts.map((h) => hostView(h, api)),
      );
    },
  },
  prepareHostForMaintenance: hostToggle(
    "prepareHostForMaintenance",
    "maintenance",
    true,
    (host) =>
      host.spec.maintenance
        ? `${described(host)} is already in ${resourceState(host)} state`
        : host.spec.degraded
          ? `Cannot prepare ${described(host)} for maintenance: it is in Degraded state`
          : undefined,
    (host) => MAINTENANCE_STATES.has(resourceState(host)),
  ),
  cancelHostMaintenance: hostToggle(
    "cancelHostMaintenance",
    "maintenance",
    false,
    (host) =>
      host.spec.maintenance
        ? undefined
        : `Cannot cancel maintenance of ${described(host)}: it is in ${resourceState(host)} state`,
    (host) => !MAINTENANCE_STATES.has(resourceState(host)),
  ),
  declareHostAsDegraded: hostToggle(
    "declareHostAsDegraded",
    "degraded",
    true,
    (host) =>
      host.spec.degraded
        ? `Host [id:${host.metadata.uid}] was already marked as Degraded.`
        : hostState(host) === "Up"
          ? `Cannot perform declare ${described(host)} as 'Degraded' when host is in Up status`
          : undefined,
    (host) => resourceState(host) === "Degraded",
  ),
  cancelHostAsDegraded: hostToggle(
    "cancelHostAsDegraded",
    "degraded",
    false,
    (host) =>
      host.spec.degraded
        ? undefined
        : `Cannot perform cancelHostAsDegraded on ${described(host)} when host is in ${resourceState(host)} state`,
    (host) => resourceState(host) !== "Degraded",
  ),
  updateHost: {
    async handler(call) {
      const host = await hostById(call);
      for (const unsupported of ["url", "oscategoryid", "annotation", "name", "externaldetails"])
        if (call.params.get(unsupported) !== undefined)
          throw new ApiError(ERROR.PARAM, `updateHost: parameter ${unsupported} is not supported by Stratus`);
      const allocation = call.params.get("allocationstate");
      if (allocation !== undefined && !["enable", "disable"].includes(allocation.toLowerCase()))
        throw new ApiError(
          ERROR.PARAM,
          `Invalid allocation state: ${allocation}, only Enable/Disable are allowed`,
        );
      const tags = call.params.get("hosttags");
      const spec = {
        ...(allocation
          ? { allocationState: allocation.toLowerCase() === "enable" ? "Enabled" : "Disabled" }
          : {}),
        ...(tags !== undefined
          ? {
              tags: tags
                .split(",")
                .map((t) => t.trim())
                .filter(Boolean),
            }
          : {}),
      };
      const updated =
        Object.keys(spec).length === 0
          ? host
          : await call.caller.client.mergePatch<Host>(
              Resources.hosts,
              host.metadata.name as string,
              undefined,
              {
                spec,
              },
            );
      return { host: hostView(updated, call.api) };
    },
  },
};

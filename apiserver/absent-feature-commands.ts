// CloudStack commands for what Stratus does not have yet: public IP addresses, port and IP
// forwarding, projects. Their listings are empty, as clients expect; associating an address is
// refused as CloudStack refuses it when a zone has no public range, and disassociating finds none.
import { Resources } from "../crds/index.ts";
import type { Command } from "./api.ts";
import { ApiError, ERROR, entityNotFound } from "./envelope.ts";
import { byId, ownedById, page } from "./listing.ts";

/** Things Stratus does not have yet (public IPs, port forwarding, projects) list as empty, as clients expect. */
const emptyList = (itemKey: string): Command => ({ handler: async (call) => page(call, itemKey, []) });

export const ABSENT_FEATURE_COMMANDS: Record<string, Command> = {
  listPublicIpAddresses: emptyList("publicipaddress"),
  // No zone has a public IP range yet: CloudStack's answer for that is insufficient capacity.
  associateIpAddress: {
    async: true,
    async handler(call) {
      const network = call.params.uuid("networkid")
        ? await ownedById(call, call.api.networks, Resources.networks, "networkid")
        : undefined;
      const zone = network ? call.api.zones.get(network.spec.zone) : byId(call.api.zones, call, "zoneid");
      throw new ApiError(
        ERROR.INSUFFICIENT_CAPACITY,
        `Insufficient address capacity: zone ${zone?.metadata.name ?? "?"} has no public IP range (Stratus has no public addresses yet)`,
      );
    },
  },
  disassociateIpAddress: {
    async: true,
    async handler(call) {
      throw entityNotFound("id", call.params.required("id"));
    },
  },
  listPortForwardingRules: emptyList("portforwardingrule"),
  listIpForwardingRules: emptyList("ipforwardingrule"),
  listProjects: emptyList("project"),
};

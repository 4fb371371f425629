// CloudStack's network commands over the caller's Networks: list, create, update (its display
// text) and delete. createNetwork is refused up front as CloudStack refuses (431): a CIDR outside
// the zone's guest ranges, over the cluster's own Service or pod ranges, or overlapping another
// network of the zone, and a VLAN from anyone but an administrator.
// The network controller enforces the same rules on objects made with kubectl (a Ready=False
// condition, nothing implemented), and the admission policy stratus-network-segments the VLAN's.
// deleteNetwork, as CloudStack, does not delete a network VMs still use: its job fails at once.
import { cidrProblem, freeCidr } from "../crds/guest-ranges.ts";
import { type Network, Resources, type Zone } from "../crds/index.ts";
import { SEGMENT_GRANT } from "../crds/network-admission.ts";
import type { Call, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { IN_USE_BY, jobAnswer, submitJob } from "./jobs.ts";
import { byId, filtered, namespaced, ownedById, page } from "./listing.ts";
import { DNS_LABEL } from "./params.ts";
import { networkView } from "./views.ts";

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** What a network is made from: createNetwork's parameters, or a deploy's default network. */
export interface NetworkRequest {
  name: string;
  gateway?: string | undefined;
  netmask?: string | undefined;
  displayName?: string | undefined;
  /** Only administrators (checked by the caller). */
  vlan?: number | undefined;
}

/**
 * Creates a network in the caller's account, refused as CloudStack refuses (431) when its CIDR is
 * outside the zone's guest ranges, over the cluster's own ranges, or overlapping another network
 * of the zone; without a gateway it takes a free /24 (freeCidr).
 */
export async function createdNetwork(call: Call, zone: Zone, request: NetworkRequest): Promise<Network> {
  const { api } = call;
  const { name, gateway, netmask, vlan } = request;
  const zoneName = zone.metadata.name as string;
  const others = api.networks.list().filter((n) => n.spec.zone === zoneName);
  const reserved = api.clusterRanges();
  let cidr: string | undefined;
  if (gateway || netmask) {
    if (!gateway || !netmask) throw new ApiError(ERROR.PARAM, "gateway and netmask must be given together");
    cidr = cidrOf(gateway, netmask);
  } else cidr = freeCidr(zone, others, reserved);
  if (!cidr)
    throw new ApiError(
      ERROR.INSUFFICIENT_CAPACITY,
      `No free guest CIDR is left in zone ${zone.spec.displayName ?? zoneName}`,
    );
  const spec = { zone: zoneName, cidr, ...(gateway ? { gateway } : {}) };
  const problem = cidrProblem(
    { metadata: { name, namespace: call.caller.account }, spec },
    zone,
    others,
    reserved,
  );
  if (problem) throw new ApiError(ERROR.PARAM, problem.message);
  return call.caller.client.create<Network>(Resources.networks, {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Network",
    metadata: { name, namespace: call.caller.account },
    spec: {
      ...spec,
      ...(request.displayName ? { displayName: request.displayName } : {}),
      ...(vlan ? { vlan } : {}),
    },
  });
}

export const NETWORK_COMMANDS: Record<string, Command> = {
  createNetwork: {
    async handler(call) {
      const { params, api } = call;
      const name = params.required("name").toLowerCase();
      params.required("networkofferingid");
      const zone = byId(api.zones, call, "zoneid");
      if (!DNS_LABEL.test(name)) throw new ApiError(ERROR.PARAM, `Invalid parameter name value=${name}`);
      const vlan = params.integer("vlan");
      if (vlan !== undefined && !(await api.can(call.caller, SEGMENT_GRANT.verb, SEGMENT_GRANT)))
        throw new ApiError(
          ERROR.PARAM,
          "Only ROOT admin is allowed to specify vlanId or bypass vlan overlap check",
        );
      const network = await createdNetwork(call, zone, {
        name,
        gateway: params.get("gateway"),
        netmask: params.get("netmask"),
        displayName: params.get("displaytext"),
        vlan,
      });
      return { network: networkView(network, api) };
    },
  },
  listNetworks: {
    async handler(call) {
      const zoneId = call.params.uuid("zoneid");
      const networks = filtered(
        call,
        await namespaced(call, call.api.networks, Resources.networks),
        (n) => n.spec.displayName,
      )
        .map((n) => networkView(n, call.api) as Record<string, Json>)
        .filter((n) => !zoneId || n.zoneid === zoneId);
      return page(call, "network", networks);
    },
  },
  deleteNetwork: {
    async: true,
    async handler(call) {
      const network = await ownedById(call, call.api.networks, Resources.networks);
      // As CloudStack, a network VMs still use is not deleted: the job fails at once (jobs.ts)
      // rather than waiting for the VMs and deleting it later unasked.
      const users = call.api.vms
        .list()
        .filter(
          (vm) =>
            vm.metadata.namespace === network.metadata.namespace &&
            (vm.spec.nics ?? []).some((nic) => nic.network === network.metadata.name),
        )
        .map((vm) => vm.metadata.name as string);
      if (users.length > 0)
        return jobAnswer(
          call,
          "deleteNetwork",
          { ...network, kind: "Network" },
          { [IN_USE_BY]: users.join(",") },
        );
      const job = await submitJob(call, "deleteNetwork", network);
      await call.caller.client.delete(
        Resources.networks,
        network.metadata.name as string,
        network.metadata.namespace,
      );
      return { jobid: job.metadata.uid as string };
    },
  },
  updateNetwork: {
    async: true,
    async handler(call) {
      const network = await ownedById(call, call.api.networks, Resources.networks);
      const displayText = call.params.get("displaytext");
      if (displayText)
        await call.caller.client.mergePatch(
          Resources.networks,
          network.metadata.name as string,
          network.metadata.namespace,
          {
            spec: { displayName: displayText },
          },
        );
      const job = await submitJob(call, "updateNetwork", { ...network, kind: "Network" });
      return { jobid: job.metadata.uid as string };
    },
  },
};

function cidrOf(gateway: string, netmask: string): string {
  if (!IPV4.test(gateway)) throw new ApiError(ERROR.PARAM, `Invalid parameter gateway value=${gateway}`);
  if (!IPV4.test(netmask)) throw new ApiError(ERROR.PARAM, `Invalid parameter netmask value=${netmask}`);
  const toNumber = (ip: string) => ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);
  const mask = toNumber(netmask);
  const prefix = 32 - Math.log2(2 ** 32 - mask);
  if (!Number.isInteger(prefix))
    throw new ApiError(ERROR.PARAM, `Invalid parameter netmask value=${netmask}`);
  const base = (toNumber(gateway) & mask) >>> 0;
  return `${[24, 16, 8, 0].map((s) => (base >>> s) & 255).join(".")}/${prefix}`;
}

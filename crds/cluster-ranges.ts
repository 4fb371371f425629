// The cluster's own address ranges, which no guest network may shadow: its Services' (ServiceCIDR
// objects) and its pods' (each Node's spec.podCIDRs). A guest network's gateway lives in the hosts'
// own network namespace, so a network over one of them would take those addresses from the host.
// Read from the cluster, never assumed: the network controller and the API component both watch them.
import type { KubeObject, ResourceType } from "../runtime/client.ts";
import type { InformerFactory } from "../runtime/component.ts";
import type { ReservedRange } from "./guest-ranges.ts";

export const SERVICE_CIDR: ResourceType = {
  group: "networking.k8s.io",
  version: "v1",
  plural: "servicecidrs",
  kind: "ServiceCIDR",
  namespaced: false,
};

export const NODE: ResourceType = {
  group: "",
  version: "v1",
  plural: "nodes",
  kind: "Node",
  namespaced: false,
};

export interface ServiceCIDR extends KubeObject {
  spec?: { cidrs?: string[] };
}

export interface Node extends KubeObject {
  spec?: { podCIDR?: string; podCIDRs?: string[] };
}

/** Guest networks are IPv4 only: an IPv6 range of a dual-stack cluster cannot clash with one. */
const isIpv4 = (cidr: string) => !cidr.includes(":");

/** The IPv4 ranges of a ServiceCIDR. */
export const serviceRanges = (serviceCidr: ServiceCIDR): string[] =>
  (serviceCidr.spec?.cidrs ?? []).filter(isIpv4);

/** The IPv4 pod ranges of a Node (podCIDR is the first of podCIDRs, or set alone by older clusters). */
export const podRanges = (node: Node): string[] => [
  ...new Set([node.spec?.podCIDR ?? "", ...(node.spec?.podCIDRs ?? [])].filter((c) => c && isIpv4(c))),
];

/** The cluster's IPv4 ranges: its Services' and its nodes' pods', each once. */
export function clusterRanges(serviceCidrs: readonly ServiceCIDR[], nodes: readonly Node[]): ReservedRange[] {
  const ranges = new Map<string, ReservedRange>();
  for (const cidr of serviceCidrs.flatMap(serviceRanges))
    ranges.set(cidr, { cidr, use: "the cluster's Service range" });
  for (const cidr of nodes.flatMap(podRanges))
    if (!ranges.has(cidr)) ranges.set(cidr, { cidr, use: "a node's pod range" });
  return [...ranges.values()];
}

/** Informers of the cluster's ranges, and the ranges they hold now. */
export function watchClusterRanges(informers: InformerFactory) {
  const serviceCidrs = informers.for<ServiceCIDR>(SERVICE_CIDR);
  const nodes = informers.for<Node>(NODE);
  return {
    serviceCidrs,
    nodes,
    current: (): ReservedRange[] => clusterRanges(serviceCidrs.list(), nodes.list()),
  };
}

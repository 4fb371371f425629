// Pure: whether a Network is served by a router (issue 17) rather than by a gateway in the hosts'
// own namespace. The network controller decides it (an isolated network in a zone with a public
// network) and says so with the RouterPlaced condition, which, once written, a network keeps: the
// host agents and compute read the decision from the network alone, so it never flips under a
// running guest.
import type { Network, Zone } from "./index.ts";

export const ROUTER_PLACED = "RouterPlaced";

/** Whether the network should have a router: isolated, in a zone with a public network. */
export function wantsRouter(
  network: Network,
  zone: Zone | undefined,
): zone is Zone & { spec: { publicNetwork: NonNullable<Zone["spec"]["publicNetwork"]> } } {
  return (network.spec.type ?? "Isolated") === "Isolated" && zone?.spec.publicNetwork !== undefined;
}

/** Whether the network is served by a router (its gateway, DHCP and DNS live there). */
export function isRouted(network: Network): boolean {
  return network.status?.conditions?.some((c) => c.type === ROUTER_PLACED) ?? false;
}

/** Why guests of a routed network cannot start yet (its router has no host), if they cannot. */
export function routerProblem(network: Network): string | undefined {
  const placed = network.status?.conditions?.find((c) => c.type === ROUTER_PLACED);
  if (!placed || placed.status === "True") return undefined;
  return placed.message ?? placed.reason;
}

// Pure: where a zone lets tenants put their networks. A Network's CIDR must lie inside one of its
// zone's guestCidrs and overlap no other Network of the zone: every gateway lives in the hosts' own
// network namespace today, so two overlapping networks would fight over the same host routes, and a
// network over the cluster's own ranges (reserved: its Services', its pods') would shadow them.
// The network controller (conditions) and the API component (refusal up front) both ask this.
import { ipToNumber, numberToIp } from "./addressing.ts";
import type { Network, Zone } from "./index.ts";

/**
 * Guest CIDRs of a zone that names none: the private 10/8 block (so 192.168/16 and 172.16/12, where
 * hosts and Kubernetes usually live, stay out). An administrator should name the zone's own.
 */
export const DEFAULT_GUEST_CIDRS: readonly string[] = ["10.0.0.0/8"];

/** First and last address of a CIDR as numbers. */
export function cidrBounds(cidr: string): { first: number; last: number } {
  const [base = "", prefix = "32"] = cidr.split("/");
  const size = 2 ** (32 - Number(prefix));
  const first = ipToNumber(base) - (ipToNumber(base) % size);
  return { first, last: first + size - 1 };
}

export function cidrsOverlap(a: string, b: string): boolean {
  const x = cidrBounds(a);
  const y = cidrBounds(b);
  return x.first <= y.last && y.first <= x.last;
}

export function cidrContains(outer: string, inner: string): boolean {
  const o = cidrBounds(outer);
  const i = cidrBounds(inner);
  return o.first <= i.first && i.last <= o.last;
}

export function zoneGuestCidrs(zone: Zone | undefined): readonly string[] {
  return zone?.spec.guestCidrs ?? DEFAULT_GUEST_CIDRS;
}

/** The zone's VLAN range, inclusive; `fallback` (the operator's --vlan-range) when it names none. */
export function zoneVlanRange(
  zone: Zone | undefined,
  fallback = { first: 100, last: 4094 },
): { first: number; last: number } {
  if (!zone?.spec.vlanRange) return fallback;
  const [first = 0, last = first] = zone.spec.vlanRange.split("-").map(Number);
  return { first, last };
}

/** Who came first among two networks claiming overlapping CIDRs: it keeps its range. */
function older(a: Network, b: Network): boolean {
  const at = a.metadata.creationTimestamp ?? "";
  const bt = b.metadata.creationTimestamp ?? "";
  if (at !== bt) return at < bt;
  return `${a.metadata.namespace}/${a.metadata.name}` < `${b.metadata.namespace}/${b.metadata.name}`;
}

export interface CidrProblem {
  reason: "CidrNotAllowed" | "CidrReserved" | "CidrOverlaps";
  message: string;
}

/** A range the cluster itself uses (cluster-ranges.ts), and what for, as a refusal says it. */
export interface ReservedRange {
  cidr: string;
  use: string;
}

/**
 * Why a network's CIDR may not be used in its zone, or nothing. `others` are the zone's other
 * networks; of two that overlap, the older keeps its range (so the refusal never flips).
 * A network not yet created (no creationTimestamp) loses to every existing one. `reserved` always
 * wins, even over an older network: the cluster's Services and pods cannot move.
 */
export function cidrProblem(
  network: Pick<Network, "metadata" | "spec">,
  zone: Zone | undefined,
  others: readonly Network[],
  reserved: readonly ReservedRange[],
): CidrProblem | undefined {
  const { cidr } = network.spec;
  if (!cidr) return undefined;
  const allowed = zoneGuestCidrs(zone);
  if (!allowed.some((range) => cidrContains(range, cidr)))
    return {
      reason: "CidrNotAllowed",
      message: `cidr ${cidr} is outside zone ${network.spec.zone}'s guest ranges (${allowed.join(", ") || "none"})`,
    };
  const shadowed = reserved.find((range) => cidrsOverlap(range.cidr, cidr));
  if (shadowed)
    return {
      reason: "CidrReserved",
      message: `cidr ${cidr} overlaps ${shadowed.use} ${shadowed.cidr}, which guest networks may not shadow`,
    };
  // A gateway inside the public network would answer for public addresses on its bridge.
  const publicCidr = zone?.spec.publicNetwork?.cidr;
  if (publicCidr && cidrsOverlap(publicCidr, cidr))
    return {
      reason: "CidrReserved",
      message: `cidr ${cidr} overlaps zone ${network.spec.zone}'s public network ${publicCidr}, which guest networks may not shadow`,
    };
  const mine = `${network.metadata.namespace}/${network.metadata.name}`;
  const clash = others.find(
    (other) =>
      other.spec.cidr !== undefined &&
      `${other.metadata.namespace}/${other.metadata.name}` !== mine &&
      !other.metadata.deletionTimestamp &&
      cidrsOverlap(other.spec.cidr, cidr) &&
      (!network.metadata.creationTimestamp || older(other, network as Network)),
  );
  if (clash)
    return {
      reason: "CidrOverlaps",
      // Another tenant's network name is not this tenant's business: say only that it is taken.
      message: `cidr ${cidr} overlaps another network of zone ${network.spec.zone}`,
    };
  return undefined;
}

/** Ready reasons with which the network controller refuses a network: nothing implements it. */
export const NETWORK_REFUSALS: readonly string[] = [
  "CidrNotAllowed",
  "CidrReserved",
  "CidrOverlaps",
  "VlanInUse",
  "VxlanNotImplemented",
];

/** Why the network controller refused the network, or nothing. */
export function networkRefusal(network: Network): string | undefined {
  const ready = network.status?.conditions?.find((c) => c.type === "Ready");
  if (ready?.status !== "False" || !NETWORK_REFUSALS.includes(ready.reason)) return undefined;
  return ready.message ?? ready.reason;
}

/** CloudStack's CIDR for an isolated network that names none. */
const CLOUDSTACK_DEFAULT_CIDR = "10.1.1.0/24";

/**
 * A /24 of the zone's guest ranges that neither a network of the zone nor a reserved range
 * overlaps, for a network that names no CIDR: CloudStack's 10.1.1.0/24 when the zone allows it
 * and it is free, else the first free one.
 */
export function freeCidr(
  zone: Zone | undefined,
  networks: readonly Network[],
  reserved: readonly ReservedRange[],
): string | undefined {
  const taken = [
    ...networks.flatMap((n) => (n.spec.cidr && !n.metadata.deletionTimestamp ? [n.spec.cidr] : [])),
    ...reserved.map((range) => range.cidr),
  ];
  const free = (cidr: string) => !taken.some((t) => cidrsOverlap(t, cidr));
  const ranges = zoneGuestCidrs(zone);
  if (ranges.some((r) => cidrContains(r, CLOUDSTACK_DEFAULT_CIDR)) && free(CLOUDSTACK_DEFAULT_CIDR))
    return CLOUDSTACK_DEFAULT_CIDR;
  for (const range of ranges) {
    const { first, last } = cidrBounds(range);
    for (let base = first; base + 255 <= last; base += 256) {
      const cidr = `${numberToIp(base)}/24`;
      if (free(cidr)) return cidr;
    }
  }
  return undefined;
}

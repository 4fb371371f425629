// Pure: the nftables ruleset of a network's router, CloudStack's virtual router as a network
// namespace rather than a VM (issue 17). The namespace is the router's alone, so its ruleset is
// replaced whole and atomically (one `nft -f` transaction): source NAT of the guest network to the
// network's source-NAT address, static NAT, port forwarding, ingress firewall rules on the public
// addresses (nothing from outside reaches a guest unless a rule allows it, as CloudStack's
// firewall), the egress policy, and what guests may ask of the router itself (DHCP, DNS, the
// metadata service). Values are validated here, never passed through: a ruleset is code.
import { isIPv4 } from "node:net";

/** The router's two sides inside its namespace. */
export const GUEST_LINK = "guest";
export const PUBLIC_LINK = "public";

export type Protocol = "tcp" | "udp";

export interface PortRange {
  start: number;
  end: number;
}

export interface PortForward {
  publicIp: string;
  protocol: Protocol;
  publicPorts: PortRange;
  guestIp: string;
  /** Same length as publicPorts. */
  guestPorts: PortRange;
}

export interface StaticNat {
  publicIp: string;
  guestIp: string;
}

/**
 * A public port spread over guests (CloudStack's load-balancer rule), by the kernel: each new
 * connection goes to the next guest (roundrobin) or to the guest its source address hashes to
 * (source); connection tracking keeps it there.
 */
export interface LoadBalancer {
  publicIp: string;
  protocol: Protocol;
  publicPort: number;
  guestPort: number;
  guestIps: string[];
  algorithm: "roundrobin" | "source";
}

/** Ingress to a public address: allowed from these CIDRs (CloudStack's createFirewallRule). */
export interface FirewallRule {
  publicIp: string;
  protocol: Protocol | "icmp" | "all";
  cidrs: string[];
  ports?: PortRange;
}

/** Egress from the guest network (CloudStack's createEgressFirewallRule). */
export interface EgressRule {
  protocol: Protocol | "icmp" | "all";
  /** Destinations. */
  cidrs: string[];
  /** Guest sources; the whole guest network when absent. */
  sources?: string[];
  ports?: PortRange;
}

export interface RouterRules {
  /** The guest network, e.g. 10.1.1.0/24. */
  guestCidr: string;
  /** The router's address on it (the guests' gateway, DHCP and DNS server). */
  guestGateway: string;
  /** The network's source-NAT address. */
  sourceNatIp: string;
  staticNat: StaticNat[];
  portForwards: PortForward[];
  loadBalancers: LoadBalancer[];
  firewall: FirewallRule[];
  /** The network offering's default: guests may go out unless a rule says otherwise (true), or only where rules allow (false). */
  egressDefaultAllow: boolean;
  egress: EgressRule[];
}

export class RouterRuleError extends Error {
  override name = "RouterRuleError";
}

function address(value: string, what: string): string {
  if (!isIPv4(value)) throw new RouterRuleError(`${what} "${value}" is not an IPv4 address`);
  return value;
}

function cidr(value: string, what: string): string {
  const [ip, bits, ...rest] = value.split("/");
  const prefix = Number(bits);
  if (rest.length > 0 || !ip || !isIPv4(ip) || !Number.isInteger(prefix) || prefix < 0 || prefix > 32)
    throw new RouterRuleError(`${what} "${value}" is not an IPv4 CIDR`);
  return `${ip}/${prefix}`;
}

function ports(range: PortRange, what: string): string {
  const { start, end } = range;
  for (const port of [start, end])
    if (!Number.isInteger(port) || port < 1 || port > 65_535)
      throw new RouterRuleError(`${what}: port ${port} is not 1 to 65535`);
  if (end < start) throw new RouterRuleError(`${what}: port range ${start}-${end} ends before it starts`);
  return start === end ? String(start) : `${start}-${end}`;
}

const protocolMatch = (protocol: FirewallRule["protocol"], range: PortRange | undefined, what: string) => {
  if (protocol === "all") return "";
  if (protocol === "icmp") return "ip protocol icmp ";
  return range ? `${protocol} dport ${ports(range, what)} ` : `ip protocol ${protocol} `;
};

const cidrSet = (cidrs: readonly string[], what: string) => {
  if (cidrs.length === 0) throw new RouterRuleError(`${what} names no CIDR`);
  return `{ ${cidrs.map((c) => cidr(c, what)).join(", ")} }`;
};

/** The router's ruleset as `nft -f` reads it; throws RouterRuleError on any invalid value. */
export function routerRuleset(rules: RouterRules): string {
  const guestNet = cidr(rules.guestCidr, "guest network");
  const gateway = address(rules.guestGateway, "guest gateway");
  const sourceNat = address(rules.sourceNatIp, "source NAT address");
  const prerouting: string[] = [];
  const postrouting: string[] = [];
  const forward: string[] = [];
  for (const [i, rule] of rules.portForwards.entries()) {
    const what = `port forward ${i + 1}`;
    const publicPorts = ports(rule.publicPorts, what);
    ports(rule.guestPorts, what);
    if (rule.publicPorts.end - rule.publicPorts.start !== rule.guestPorts.end - rule.guestPorts.start)
      throw new RouterRuleError(`${what}: public and private port ranges differ in length`);
    const single = rule.publicPorts.start === rule.publicPorts.end;
    // nftables maps a port, not a range onto another range: a range goes to the same ports.
    if (!single && rule.publicPorts.start !== rule.guestPorts.start)
      throw new RouterRuleError(`${what}: a port range is forwarded to the same ports of the guest`);
    const guestIp = address(rule.guestIp, what);
    const target = single ? `${guestIp}:${rule.guestPorts.start}` : guestIp;
    prerouting.push(
      `iifname "${PUBLIC_LINK}" ip daddr ${address(rule.publicIp, what)} ${rule.protocol} dport ${publicPorts} dnat to ${target}`,
    );
  }
  for (const [i, balancer] of rules.loadBalancers.entries()) {
    const what = `load balancer ${i + 1}`;
    const publicPort = ports({ start: balancer.publicPort, end: balancer.publicPort }, what);
    const guestPort = ports({ start: balancer.guestPort, end: balancer.guestPort }, what);
    const guests = balancer.guestIps.map((guest) => address(guest, what));
    if (guests.length === 0) continue; // no member: nothing answers, as a balancer with no backend
    const choice = balancer.algorithm === "source" ? "jhash ip saddr" : "numgen inc";
    const members = guests.map((guest, n) => `${n} : ${guest}`).join(", ");
    prerouting.push(
      `iifname "${PUBLIC_LINK}" ip daddr ${address(balancer.publicIp, what)} ${balancer.protocol} dport ${publicPort} dnat to ${choice} mod ${guests.length} map { ${members} } : ${guestPort}`,
    );
  }
  for (const [i, nat] of rules.staticNat.entries()) {
    const what = `static NAT ${i + 1}`;
    const publicIp = address(nat.publicIp, what);
    const guestIp = address(nat.guestIp, what);
    prerouting.push(`iifname "${PUBLIC_LINK}" ip daddr ${publicIp} dnat to ${guestIp}`);
    postrouting.push(`oifname "${PUBLIC_LINK}" ip saddr ${guestIp} snat to ${publicIp}`);
  }
  postrouting.push(`oifname "${PUBLIC_LINK}" ip saddr ${guestNet} snat to ${sourceNat}`);
  // Ingress: a connection to a public address reaches a guest only if a firewall rule on that
  // address allows its original destination port from its source.
  for (const [i, rule] of rules.firewall.entries()) {
    const what = `firewall rule ${i + 1}`;
    const publicIp = address(rule.publicIp, what);
    const match =
      rule.protocol === "all"
        ? ""
        : rule.protocol === "icmp"
          ? "ip protocol icmp "
          : rule.ports
            ? `meta l4proto ${rule.protocol} ct original proto-dst ${ports(rule.ports, what)} `
            : `meta l4proto ${rule.protocol} `;
    forward.push(
      `iifname "${PUBLIC_LINK}" ct original ip daddr ${publicIp} ip saddr ${cidrSet(rule.cidrs, what)} ${match}accept`,
    );
  }
  const egress = rules.egress.map((rule, i) => {
    const what = `egress rule ${i + 1}`;
    const sources = rule.sources ? `ip saddr ${cidrSet(rule.sources, what)} ` : "";
    return `iifname "${GUEST_LINK}" oifname "${PUBLIC_LINK}" ${sources}ip daddr ${cidrSet(rule.cidrs, what)} ${protocolMatch(rule.protocol, rule.ports, what)}${rules.egressDefaultAllow ? "drop" : "accept"}`;
  });
  return [
    "flush ruleset",
    "table ip stratus_router {",
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    ...prerouting.map((r) => `    ${r}`),
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    ...postrouting.map((r) => `    ${r}`),
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter; policy drop;",
    "    ct state established,related accept",
    "    ct state invalid drop",
    ...forward.map((r) => `    ${r}`),
    ...egress.map((r) => `    ${r}`),
    `    iifname "${GUEST_LINK}" oifname "${PUBLIC_LINK}" ip saddr ${guestNet} ${rules.egressDefaultAllow ? "accept" : "drop"}`,
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy drop;",
    "    ct state established,related accept",
    '    iifname "lo" accept',
    // What guests ask of their router: DHCP, DNS, the metadata service, ping.
    `    iifname "${GUEST_LINK}" udp dport { 53, 67 } accept`,
    `    iifname "${GUEST_LINK}" ip daddr ${gateway} tcp dport { 53, 80 } accept`,
    `    iifname "${GUEST_LINK}" ip daddr ${gateway} icmp type echo-request accept`,
    "  }",
    "}",
    "",
  ].join("\n");
}

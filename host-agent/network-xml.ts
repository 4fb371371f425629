// Pure: the libvirt network of a Stratus Network on one host: a bridge, and for networks with a
// CIDR the gateway address and DHCP that hands each VM NIC exactly its allocated address. Names
// carry the owning agent's tag, so two clusters (or two hosts) on one libvirt daemon never take
// each other's networks for their own.
import { createHash } from "node:crypto";
import { addressPlan } from "../crds/addressing.ts";
import type { Network } from "../crds/index.ts";
import { isRouted } from "../crds/routing.ts";
import type { DhcpReservation, Owner } from "./hypervisor.ts";
import { escapeXml } from "./xml.ts";

/** Every libvirt object a Stratus agent creates starts with this. */
export const STRATUS_PREFIX = "stratus-";

/** 8 hex digits naming one agent (cluster and host) in libvirt object names. */
export function ownerTag(owner: Owner): string {
  return createHash("sha256").update(`${owner.cluster}/${owner.host}`).digest("hex").slice(0, 8);
}

/** The prefix of the networks one agent owns. */
export function networkPrefix(owner: Owner): string {
  return `${STRATUS_PREFIX}${ownerTag(owner)}-net-`;
}

export function libvirtNetworkName(owner: Owner, networkUid: string): string {
  return `${networkPrefix(owner)}${networkUid}`;
}

/** Every guest bridge's name starts with this (the host guard matches it). */
export const BRIDGE_PREFIX = "sbr";

/** Linux limits interface names to 15 characters; the owner is in the hash, so agents never collide. */
export function bridgeName(owner: Owner, networkUid: string): string {
  return `${BRIDGE_PREFIX}${createHash("sha256")
    .update(`${ownerTag(owner)}/${networkUid}`)
    .digest("hex")
    .slice(0, 12)}`;
}

export interface NetworkSpec {
  /** The libvirt network's name. */
  name: string;
  bridge: string;
  /** namespace/name of the Stratus Network. */
  title: string;
  ip?: { gateway: string; netmask: string; start: string; end: string };
  dhcp: boolean;
  /** The VLAN the network's traffic carries between hosts. */
  vlan?: number;
}

export function networkSpecFor(network: Network, owner: Owner): NetworkSpec {
  const uid = network.metadata.uid as string;
  // A routed network's gateway and DHCP live in its router: the bridge has no address here.
  const plan = isRouted(network) ? undefined : addressPlan(network);
  const vlan = network.status?.vlan ?? network.spec.vlan;
  return {
    name: libvirtNetworkName(owner, uid),
    bridge: bridgeName(owner, uid),
    title: `${network.metadata.namespace}/${network.metadata.name}`,
    ...(plan
      ? { ip: { gateway: plan.gateway, netmask: plan.netmask, start: plan.start, end: plan.end } }
      : {}),
    dhcp: network.spec.dhcp ?? true,
    ...(vlan !== undefined ? { vlan } : {}),
  };
}

export function dhcpHostXml(host: DhcpReservation): string {
  return `<host mac='${escapeXml(host.mac)}' name='${escapeXml(host.name)}' ip='${escapeXml(host.ip)}'/>`;
}

export function buildNetworkXml(spec: NetworkSpec, hosts: readonly DhcpReservation[]): string {
  const e = escapeXml;
  const lines = [
    "<network>",
    `  <name>${e(spec.name)}</name>`,
    `  <bridge name='${e(spec.bridge)}' stp='off'/>`,
    ...(spec.ip
      ? [
          `  <ip address='${e(spec.ip.gateway)}' netmask='${e(spec.ip.netmask)}'>`,
          ...(spec.dhcp
            ? [
                "    <dhcp>",
                `      <range start='${e(spec.ip.start)}' end='${e(spec.ip.end)}'/>`,
                ...hosts.map((h) => `      ${dhcpHostXml(h)}`),
                "    </dhcp>",
              ]
            : []),
          "  </ip>",
        ]
      : []),
    "</network>",
  ];
  return `${lines.join("\n")}\n`;
}

/** The DHCP host entries a network's XML holds now. */
export function dhcpHostsIn(xml: string): DhcpReservation[] {
  return [...xml.matchAll(/<host\s+([^>]*)\/>/g)].map((match) => {
    const attribute = (name: string) => new RegExp(`${name}='([^']*)'`).exec(match[1] ?? "")?.[1] ?? "";
    return { mac: attribute("mac"), ip: attribute("ip"), name: attribute("name") };
  });
}

/** Which reservations to delete and add so a network holds exactly `desired`. */
export function reservationChanges(
  current: readonly DhcpReservation[],
  desired: readonly DhcpReservation[],
): { remove: DhcpReservation[]; add: DhcpReservation[] } {
  const same = (a: DhcpReservation, b: DhcpReservation) => a.mac === b.mac && a.ip === b.ip;
  return {
    remove: current.filter((c) => !desired.some((d) => same(c, d))),
    add: desired.filter((d) => !current.some((c) => same(c, d))),
  };
}

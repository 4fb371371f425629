// Pure: the libvirt network of a Stratus Network on one host: a bridge, and for networks with a
// CIDR the gateway address and DHCP that hands each VM NIC exactly its allocated address.
import { addressPlan } from "../crds/addressing.ts";
import type { Network } from "../crds/index.ts";
import { escapeXml } from "./xml.ts";

export const NETWORK_PREFIX = "stratus-net-";

export function libvirtNetworkName(networkUid: string): string {
  return `${NETWORK_PREFIX}${networkUid}`;
}

/** Linux limits interface names to 15 characters. */
export function bridgeName(networkUid: string): string {
  return `sbr${networkUid.replaceAll("-", "").slice(0, 12)}`;
}

export interface DhcpHost {
  mac: string;
  ip: string;
  name: string;
}

export function dhcpHostXml(host: DhcpHost): string {
  return `<host mac='${escapeXml(host.mac)}' name='${escapeXml(host.name)}' ip='${escapeXml(host.ip)}'/>`;
}

export function buildNetworkXml(network: Network, hosts: readonly DhcpHost[]): string {
  const uid = network.metadata.uid as string;
  const plan = addressPlan(network);
  const dhcp = network.spec.dhcp ?? true;
  const lines = [
    "<network>",
    `  <name>${libvirtNetworkName(uid)}</name>`,
    `  <title>${escapeXml(`${network.metadata.namespace}/${network.metadata.name}`)}</title>`,
    `  <bridge name='${bridgeName(uid)}' stp='off'/>`,
    ...(plan
      ? [
          `  <ip address='${escapeXml(plan.gateway)}' netmask='${escapeXml(plan.netmask)}'>`,
          ...(dhcp
            ? [
                "    <dhcp>",
                `      <range start='${escapeXml(plan.start)}' end='${escapeXml(plan.end)}'/>`,
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
export function dhcpHostsIn(xml: string): DhcpHost[] {
  return [...xml.matchAll(/<host\s+([^>]*)\/>/g)].map((match) => {
    const attribute = (name: string) => new RegExp(`${name}='([^']*)'`).exec(match[1] ?? "")?.[1] ?? "";
    return { mac: attribute("mac"), ip: attribute("ip"), name: attribute("name") };
  });
}

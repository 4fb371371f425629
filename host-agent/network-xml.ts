// Pure: the libvirt network of a Stratus Network on one host: a bridge, and for networks with a
// CIDR the gateway address and DHCP that hands each VM NIC exactly its allocated address.
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

function ipToNumber(ip: string): number {
  return ip.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
}

function numberToIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");
}

/** Gateway, netmask and DHCP range of a network's CIDR (defaults: first address, the rest). */
export function addressPlan(
  network: Network,
): { gateway: string; netmask: string; start: string; end: string } | undefined {
  const { cidr } = network.spec;
  if (!cidr) return undefined;
  const [base = "", prefixText = "24"] = cidr.split("/");
  const prefix = Number(prefixText);
  const size = 2 ** (32 - prefix);
  const first = ipToNumber(base);
  const gateway = network.spec.gateway ?? numberToIp(first + 1);
  const netmask = numberToIp(2 ** 32 - size);
  const start = network.spec.ipRange?.start ?? numberToIp(first + 2);
  const end = network.spec.ipRange?.end ?? numberToIp(first + size - 2);
  return { gateway, netmask, start, end };
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

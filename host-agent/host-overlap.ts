// The gateway of a Stratus network lives in the host's own network namespace, so a network whose
// CIDR overlaps an address or route of the host would take that route over (a tenant's
// 192.168.10.0/29 with gateway .5 shadowing the host's LAN). The agent refuses such a network
// before libvirt sees it and says why in the VM's condition. Stratus bridges (sbr*) are not the
// host's: overlap between networks is the network controller's to refuse (one zone, no overlap),
// and the same network's bridge on a second agent of this machine must not refuse itself.
import { execFile } from "node:child_process";
import { networkInterfaces } from "node:os";
import { promisify } from "node:util";
import { ipToNumber } from "../crds/addressing.ts";
import { cidrsOverlap } from "../crds/guest-ranges.ts";
import { BRIDGE_PREFIX, type NetworkSpec } from "./network-xml.ts";
import { HostProblem } from "./problem.ts";

const run = promisify(execFile);

/** An IPv4 network the host itself uses: an interface's address or a route. */
export interface HostNet {
  cidr: string;
  what: string;
}

interface Route {
  dst?: string;
  dev?: string;
  gateway?: string;
}

/** Pure: the host's networks from its interfaces and its routing table, without Stratus bridges and the default route. */
export function hostNets(
  interfaces: NodeJS.Dict<{ family: string; cidr: string | null }[]>,
  routes: readonly Route[],
): HostNet[] {
  const ours = (dev: string | undefined) => dev?.startsWith(BRIDGE_PREFIX) ?? false;
  const nets: HostNet[] = [];
  for (const [name, addresses] of Object.entries(interfaces)) {
    if (ours(name)) continue;
    for (const a of addresses ?? [])
      if (a.family === "IPv4" && a.cidr) nets.push({ cidr: a.cidr, what: `address ${a.cidr} on ${name}` });
  }
  for (const r of routes) {
    if (!r.dst || r.dst === "default" || ours(r.dev)) continue;
    const cidr = r.dst.includes("/") ? r.dst : `${r.dst}/32`;
    if (cidr.endsWith("/0")) continue;
    nets.push({
      cidr,
      what: `route ${cidr}${r.gateway ? ` via ${r.gateway}` : ""}${r.dev ? ` dev ${r.dev}` : ""}`,
    });
  }
  return nets;
}

/** The CIDR a network's gateway and netmask span. */
export function specCidr(ip: NonNullable<NetworkSpec["ip"]>): string {
  const mask = ipToNumber(ip.netmask);
  const prefix = 32 - Math.log2(2 ** 32 - mask);
  const base = ipToNumber(ip.gateway) - (ipToNumber(ip.gateway) % 2 ** (32 - prefix));
  return `${[24, 16, 8, 0].map((s) => Math.floor(base / 2 ** s) % 256).join(".")}/${prefix}`;
}

/** Pure: why the network may not be configured on a host with these networks, or nothing. */
export function hostOverlap(spec: NetworkSpec, nets: readonly HostNet[]): string | undefined {
  if (!spec.ip) return undefined;
  const cidr = specCidr(spec.ip);
  const clash = nets.find((n) => cidrsOverlap(n.cidr, cidr));
  return (
    clash &&
    `Network ${spec.title} (${cidr}) overlaps the host's ${clash.what}; the agent does not configure it.`
  );
}

const CACHE_MS = 5_000;
let cached: { at: number; nets: Promise<HostNet[]> } | undefined;

/** The host's networks now (read at most every few seconds: every VM's sync asks). */
function currentHostNets(): Promise<HostNet[]> {
  if (cached && Date.now() - cached.at < CACHE_MS) return cached.nets;
  const nets = run("ip", ["-j", "-4", "route"])
    .then((r) => JSON.parse(r.stdout) as Route[])
    .catch(() => [] as Route[]) // no iproute2: the addresses still count
    .then((routes) => hostNets(networkInterfaces(), routes));
  cached = { at: Date.now(), nets };
  return nets;
}

/** Throws NetworkOverlapsHost when the network's CIDR overlaps an address or route of this host. */
export async function refuseHostOverlap(spec: NetworkSpec): Promise<void> {
  if (!spec.ip) return;
  const problem = hostOverlap(spec, await currentHostNets());
  if (problem) throw new HostProblem("NetworkOverlapsHost", problem);
}

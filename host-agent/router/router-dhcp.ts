// DHCP and DNS of a network, served by dnsmasq inside its router's namespace (issue 17), as
// CloudStack's virtual router serves them: only the addresses the orchestration reserved (static
// leases by MAC, nothing from a pool), the router as gateway and DNS server, the VMs' names in DNS,
// other names forwarded to the zone's DNS servers. Listening on the router's guest address only, so
// nothing of the host answers guests. The hosts file is re-read on SIGHUP, so a new VM costs no
// restart; the configuration and the process are made again whenever they differ or are gone.
import { mkdir } from "node:fs/promises";
import { isIPv4 } from "node:net";
import { join } from "node:path";
import { HostProblem } from "../problem.ts";
import { runningPid, stopped, writeIfChanged } from "./router-daemons.ts";
import { commandIn } from "./router-namespace.ts";
import { GUEST_LINK } from "./router-rules.ts";

export interface DhcpHost {
  mac: string;
  ip: string;
  hostname: string;
}

export interface RouterDhcp {
  /** The router's namespace. */
  namespace: string;
  /** A directory of this router alone (configuration, hosts file, pid file). */
  stateDir: string;
  guestGateway: string;
  /** The guest network's netmask, e.g. 255.255.255.0. */
  netmask: string;
  /** The network's first address, e.g. 10.1.1.0. */
  networkAddress: string;
  domain?: string;
  /** The zone's DNS servers, where other names are asked. */
  upstreamDns: string[];
  hosts: DhcpHost[];
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const DOMAIN = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

function checked(value: string, valid: boolean, what: string): string {
  if (!valid) throw new HostProblem("RouterSetupFailed", `${what} "${value}" is not valid for dnsmasq`);
  return value;
}

/** Pure: dnsmasq's configuration; every value is checked, since it is code to dnsmasq. */
export function dnsmasqConfig(dhcp: RouterDhcp): string {
  const gateway = checked(dhcp.guestGateway, isIPv4(dhcp.guestGateway), "gateway");
  const network = checked(dhcp.networkAddress, isIPv4(dhcp.networkAddress), "network");
  const netmask = checked(dhcp.netmask, isIPv4(dhcp.netmask), "netmask");
  return [
    `interface=${GUEST_LINK}`,
    "bind-interfaces",
    `listen-address=${gateway}`,
    "no-resolv",
    "no-hosts",
    ...dhcp.upstreamDns.map((server) => `server=${checked(server, isIPv4(server), "DNS server")}`),
    ...(dhcp.domain ? [`domain=${checked(dhcp.domain, DOMAIN.test(dhcp.domain), "domain")}`] : []),
    // Static leases only: an address is a VM's because the orchestration reserved it.
    `dhcp-range=${network},static,${netmask},1h`,
    `dhcp-option=option:router,${gateway}`,
    `dhcp-option=option:dns-server,${gateway}`,
    "dhcp-authoritative",
    "leasefile-ro",
    `dhcp-hostsfile=${join(dhcp.stateDir, "hosts")}`,
    `pid-file=${join(dhcp.stateDir, "dnsmasq.pid")}`,
    "",
  ].join("\n");
}

/** Pure: the hosts file, one static lease per VM NIC. */
export function dhcpHostsFile(hosts: readonly DhcpHost[]): string {
  return hosts
    .map(
      (h) =>
        `${checked(h.mac, MAC.test(h.mac), "MAC")},${checked(h.ip, isIPv4(h.ip), "address")},${checked(h.hostname, HOSTNAME.test(h.hostname), "hostname")}\n`,
    )
    .join("");
}

const pidFile = (stateDir: string) => join(stateDir, "dnsmasq.pid");

/** dnsmasq serves `dhcp` in the router's namespace: started, reloaded or restarted as needed. */
export async function ensureDhcp(dhcp: RouterDhcp): Promise<void> {
  // dnsmasq drops root once started: its files must stay readable to it (SIGHUP re-reads hosts).
  await mkdir(dhcp.stateDir, { recursive: true, mode: 0o755 });
  const config = join(dhcp.stateDir, "dnsmasq.conf");
  const configChanged = await writeIfChanged(config, dnsmasqConfig(dhcp));
  const hostsChanged = await writeIfChanged(join(dhcp.stateDir, "hosts"), dhcpHostsFile(dhcp.hosts));
  let pid = await runningPid(pidFile(dhcp.stateDir), "dnsmasq");
  if (pid && configChanged) {
    await stopped(pid, "dnsmasq");
    pid = undefined;
  }
  if (!pid) {
    await commandIn(dhcp.namespace, "dnsmasq", [`--conf-file=${config}`]);
    return;
  }
  if (hostsChanged) process.kill(pid, "SIGHUP");
}

/** Stops the router's dnsmasq, if it runs. */
export async function stopDhcp(stateDir: string): Promise<boolean> {
  const pid = await runningPid(pidFile(stateDir), "dnsmasq");
  if (!pid) return false;
  await stopped(pid, "dnsmasq");
  return true;
}

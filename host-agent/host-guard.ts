// Guests reach their host only for what their network needs from it: libvirt's dnsmasq on the
// bridge (DHCP and DNS), and a ping of the gateway. Everything else a guest sends to the host's own
// addresses (the agent's health and console ports, the control plane, sshd, any service bound to
// every address) is dropped, by an nftables table of Stratus's own: libvirt's rules live in tables
// of their own and are left alone. A drop in any base chain is final, whatever they accept.
import { execFile } from "node:child_process";
import { BRIDGE_PREFIX } from "./network-xml.ts";

export const HOST_GUARD_TABLE = "stratus_host_guard";

/**
 * Pure: the table, replaced in one transaction (declaring the table first makes the delete
 * valid on a host that never had it). The same for every agent on a host, so two agents (two
 * clusters on one libvirt daemon) installing it leave one and the same table.
 */
export function hostGuardRuleset(): string {
  return `table inet ${HOST_GUARD_TABLE}
delete table inet ${HOST_GUARD_TABLE}
table inet ${HOST_GUARD_TABLE} {
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iifname "${BRIDGE_PREFIX}*" jump from_guests
  }
  chain from_guests {
    ct state established,related accept
    udp dport { 53, 67 } accept
    tcp dport 53 accept
    icmp type echo-request accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, echo-request } accept
    counter drop
  }
}
`;
}

export class HostGuardError extends Error {}

/** Installs (or replaces) the guard in the agent's network namespace. */
export async function installHostGuard(): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile("nft", ["-f", "-"], (error, _stdout, stderr) => {
      if (!error) return resolve();
      const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
      reject(
        new HostGuardError(
          missing
            ? "nft is not installed (Debian's nftables): guests could reach every service of the host"
            : `nft refused the host guard: ${stderr.trim() || error.message}`,
        ),
      );
    });
    child.stdin?.end(hostGuardRuleset());
  });
}

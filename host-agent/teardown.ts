// Takes a host out of service: every Stratus domain is shut down (ACPI, then destroyed after the
// grace period) and undefined, and the Stratus networks and storage pool are removed from libvirt.
// Disk files stay in the pool directory, and the VM objects stay in the API: when an agent runs on
// the host again it recreates the domains from them. Domains and networks Stratus did not create
// are never touched.
import type { Logger } from "pino";
import { sleep } from "../runtime/time.ts";
import { STORAGE_POOL } from "./disks.ts";
import { vmUidOf } from "./domain-xml.ts";
import type { LibvirtConnection } from "./libvirt/connection.ts";
import { NETWORK_PREFIX } from "./network-xml.ts";

export interface TeardownReport {
  domains: string[];
  networks: string[];
}

export async function tearDownHost(
  libvirt: LibvirtConnection,
  options: { shutdownGraceMs: number; log: Logger },
): Promise<TeardownReport> {
  const domains = (await libvirt.listDomains()).filter((d) => vmUidOf(d.name) !== undefined);
  const running = domains.filter((d) => d.state !== "shutoff").map((d) => d.name);
  for (const name of running) await libvirt.shutdownDomain(name).catch(() => undefined);
  const deadline = Date.now() + options.shutdownGraceMs;
  for (const name of running) {
    while ((await libvirt.domain(name))?.state !== "shutoff" && Date.now() < deadline) await sleep(250);
    if ((await libvirt.domain(name))?.state !== "shutoff") {
      options.log.warn({ domain: name }, "the guest ignored the shutdown request; destroying it");
      await libvirt.destroyDomain(name);
    }
  }
  for (const { name } of domains) await libvirt.undefineDomain(name);
  const networks = (await libvirt.listNetworks()).filter((n) => n.startsWith(NETWORK_PREFIX));
  for (const name of networks) await libvirt.deleteNetwork(name);
  await libvirt.deletePool(STORAGE_POOL);
  return { domains: domains.map((d) => d.name), networks };
}

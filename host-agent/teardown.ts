// Takes a host out of service: every domain this agent owns (its cluster and host) is shut down
// (ACPI, then powered off after the grace period) and undefined, and its networks and storage
// pool are removed from libvirt. Disk files stay in the pool directory, and the VM objects stay in
// the API: when an agent runs on the host again it recreates the domains from them. Domains,
// networks and pools of other clusters or hosts on the same daemon are never touched.
import type { Logger } from "pino";
import { sleep } from "../runtime/time.ts";
import type { Hypervisor, Owner } from "./hypervisor.ts";

export interface TeardownReport {
  domains: string[];
  networks: string[];
  /** Stratus domains left alone because another agent owns them. */
  foreign: number;
}

export async function tearDownHost(
  hypervisor: Hypervisor,
  owner: Owner,
  options: { shutdownGraceMs: number; log: Logger },
): Promise<TeardownReport> {
  const all = await hypervisor.listDomains();
  const own = all.filter((d) => d.owner?.cluster === owner.cluster && d.owner.host === owner.host);
  const running = own.filter((d) => d.state !== "shutoff").map((d) => d.vmUid);
  for (const uid of running) await hypervisor.requestShutdown(uid).catch(() => undefined);
  const deadline = Date.now() + options.shutdownGraceMs;
  for (const uid of running) {
    while ((await hypervisor.observe(uid))?.state !== "shutoff" && Date.now() < deadline) await sleep(250);
    if ((await hypervisor.observe(uid))?.state !== "shutoff") {
      options.log.warn({ uid }, "the guest ignored the shutdown request; powering it off");
      await hypervisor.powerOff(uid);
    }
  }
  for (const { vmUid } of own) await hypervisor.undefine(vmUid);
  const networks = await hypervisor.ownNetworks();
  for (const name of networks) await hypervisor.removeNetwork(name);
  await hypervisor.removePools();
  return { domains: own.map((d) => `stratus-${d.vmUid}`), networks, foreign: all.length - own.length };
}

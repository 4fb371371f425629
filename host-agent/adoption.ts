// At start-up the agent looks at every Stratus domain on its hypervisor and acts only on its own
// (marked with its cluster and host). A domain of its own whose VM is not bound here is stopped,
// never removed, and only once a fresh read of the VM shows it is gone or bound elsewhere: a
// restored or re-installed control plane, another cluster's agent on the same daemon or a renamed
// host must never cost a guest its disks.
import type { Logger } from "pino";
import { type Host, Resources, type VirtualMachine } from "../crds/index.ts";
import type { KubeClient } from "../runtime/client.ts";
import { unlessGone } from "../runtime/objects.ts";
import type { AgentWrites } from "./agent-writes.ts";
import type { Hypervisor, ObservedDomain, Owner } from "./hypervisor.ts";

export type DomainVerdict =
  /** Not this agent's: another cluster's or host's, or unmarked. Never touched. */
  | "foreign"
  /** Bound here: the reconcile loop runs it. */
  | "bound"
  /** Its VM is gone or bound to another host: stop it, keep its definition and disks. */
  | "orphaned";

/** Pure: what the agent may do with a domain, given whether a fresh read found its VM bound here. */
export function judgeDomain(
  domain: ObservedDomain,
  owner: Owner,
  vm: Pick<VirtualMachine, "metadata" | "status"> | undefined,
): DomainVerdict {
  if (domain.owner?.cluster !== owner.cluster || domain.owner.host !== owner.host) return "foreign";
  if (vm && vm.metadata.uid === domain.vmUid && vm.status?.host === owner.host) return "bound";
  return "orphaned";
}

export async function reconcileHostDomains(context: {
  client: KubeClient;
  hypervisor: Hypervisor;
  owner: Owner;
  /** UIDs of the VMs the agent's complete, fresh list shows bound here. */
  bound: ReadonlySet<string>;
  writes: AgentWrites;
  log: Logger;
}): Promise<{ foreign: number; orphaned: string[] }> {
  const { hypervisor, owner, log } = context;
  let foreign = 0;
  const orphaned: string[] = [];
  for (const domain of await hypervisor.listDomains()) {
    if (
      context.bound.has(domain.vmUid) &&
      domain.owner?.cluster === owner.cluster &&
      domain.owner.host === owner.host
    )
      continue;
    const vm = domain.vm ? await readVm(context.client, domain.vm.namespace, domain.vm.name) : undefined;
    const verdict = judgeDomain(domain, owner, vm);
    if (verdict === "foreign") {
      foreign++;
      log.debug({ uid: domain.vmUid, owner: domain.owner }, "a domain another agent owns; leaving it alone");
      continue;
    }
    if (verdict === "bound") continue;
    orphaned.push(domain.vmUid);
    const running = domain.state !== "shutoff";
    if (running) await hypervisor.powerOff(domain.vmUid);
    const where =
      vm?.metadata.uid === domain.vmUid ? `is bound to ${vm.status?.host ?? "no host"}` : "no longer exists";
    const note = `The domain of VM ${domain.vm?.namespace}/${domain.vm?.name} (${domain.vmUid}) on ${owner.host} ${running ? "was stopped" : "is stopped"}: its VM ${where}. Its definition and disks are kept.`;
    log.warn({ uid: domain.vmUid }, note);
    const host = await context.client.get<Host>(Resources.hosts, owner.host).catch(() => undefined);
    if (host)
      await context.writes.event(Resources.hosts, host, {
        type: "Warning",
        reason: "OrphanedDomainStopped",
        action: "Stop",
        note,
      });
  }
  return { foreign, orphaned };
}

async function readVm(
  client: KubeClient,
  namespace: string,
  name: string,
): Promise<VirtualMachine | undefined> {
  return unlessGone(client.get<VirtualMachine>(Resources.virtualMachines, name, namespace));
}

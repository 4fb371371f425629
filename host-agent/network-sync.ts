// The host's Stratus networks follow the VMs bound here: each network a live VM uses exists with
// exactly its DHCP reservations, and so does each network whose router runs here; any other network
// of this agent is torn down.
import type { Logger } from "pino";
import type { VirtualMachine } from "../crds/index.ts";
import type { Hypervisor, Owner } from "./hypervisor.ts";
import { bridgeName, type NetworkSpec, networkPrefix, networkSpecFor } from "./network-xml.ts";
import { reservationsFor } from "./planner.ts";
import { HostProblem } from "./problem.ts";
import type { VmWorld } from "./vm-sync.ts";

export async function syncHostNetworks(
  context: {
    owner: Owner;
    hypervisor: Hypervisor;
    world: Pick<VmWorld, "boundVms" | "networks" | "routedNetworks">;
    /** Called with the bridge of each network removed (host-side plumbing such as VLAN links). */
    afterNetworkRemoved?: (bridge: string) => Promise<void>;
  },
  log: Logger,
  leaving?: VirtualMachine,
): Promise<void> {
  const { owner, hypervisor: hv, world } = context;
  const vms = world.boundVms().filter((vm) => !vm.metadata.deletionTimestamp && vm !== leaving);
  const used = new Map<string, NetworkSpec>();
  for (const vm of vms) {
    for (const network of (await world.networks(vm)).values()) {
      const spec = networkSpecFor(network, owner);
      used.set(spec.name, spec);
      try {
        await hv.syncNetwork(spec, reservationsFor(network, vms));
      } catch (error) {
        // The VM's own sync reports it (e.g. NetworkOverlapsHost); the other networks go on.
        if (!(error instanceof HostProblem)) throw error;
        log.warn({ network: spec.title, reason: error.reason }, error.message);
      }
    }
  }
  // A network whose router runs here keeps its bridge, guests here or not.
  for (const network of world.routedNetworks?.() ?? []) {
    const spec = networkSpecFor(network, owner);
    if (used.has(spec.name)) continue;
    used.set(spec.name, spec);
    await hv.syncNetwork(spec, []);
  }
  const prefix = networkPrefix(owner);
  for (const name of await hv.ownNetworks()) {
    if (used.has(name)) continue;
    await hv.removeNetwork(name);
    await context.afterNetworkRemoved?.(bridgeName(owner, name.slice(prefix.length)));
    log.info({ network: name }, "removed a network no VM here uses");
  }
}

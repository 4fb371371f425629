import pino from "pino";
import { describe, expect, it } from "vitest";
import type { Network, VirtualMachine } from "../crds/index.ts";
import { FakeHypervisor } from "./fake-hypervisor.ts";
import type { DhcpReservation } from "./hypervisor.ts";
import { syncHostNetworks } from "./network-sync.ts";
import { libvirtNetworkName, type NetworkSpec } from "./network-xml.ts";
import { HostProblem } from "./problem.ts";
import { network, OWNER, preparedVm } from "./testing/fixtures.ts";

const log = pino({ level: "silent" });

/** A host where one network overlaps the host's own routes: the agent refuses it. */
class OverlappingHost extends FakeHypervisor {
  override async syncNetwork(spec: NetworkSpec, reservations: readonly DhcpReservation[]): Promise<void> {
    if (spec.title.endsWith("/bad")) throw new HostProblem("NetworkOverlapsHost", `${spec.title} overlaps`);
    await super.syncNetwork(spec, reservations);
  }
}

describe("the host's networks", () => {
  it("go on past a network the agent refuses: the others sync, unused ones go", async () => {
    const hv = new OverlappingHost(OWNER);
    const bad = { ...network, metadata: { ...network.metadata, name: "bad", uid: "bad-uid" } } as Network;
    await hv.syncNetwork(
      { name: libvirtNetworkName(OWNER, "old-uid"), bridge: "sbrold", title: "team-a/old", dhcp: false },
      [],
    );
    const vms: VirtualMachine[] = [preparedVm("a"), preparedVm("b")];
    const uses = new Map([
      ["a", bad],
      ["b", network],
    ]);
    await syncHostNetworks(
      {
        owner: OWNER,
        hypervisor: hv,
        world: {
          boundVms: () => vms,
          networks: async (vm) => new Map([["eth0", uses.get(vm.metadata.name as string) as Network]]),
        },
      },
      log,
    );
    expect((await hv.ownNetworks()).sort()).toEqual([
      libvirtNetworkName(OWNER, network.metadata.uid as string),
    ]);
  });
});

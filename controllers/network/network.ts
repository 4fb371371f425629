// Networking: the zone's guest ranges enforced (guest-ranges.ts), clear of the cluster's own
// Service and pod ranges (cluster-ranges.ts), a VLAN for each network (vlans.ts), address usage in
// Network status (rate limited: it changes with every allocation), deletion held while VMs use the
// network, and the release of addresses whose VM is gone. Allocation is compute's, through ipam.ts.
import type { Logger } from "pino";
import { addressPlan, allocatableCount } from "../../crds/addressing.ts";
import { podRanges, serviceRanges, watchClusterRanges } from "../../crds/cluster-ranges.ts";
import { cidrProblem, cidrsOverlap, zoneVlanRange } from "../../crds/guest-ranges.ts";
import {
  type GuestVlan,
  type IPAddress,
  type Network,
  Resources,
  type VirtualMachine,
  type Zone,
} from "../../crds/index.ts";
import { ROUTER_PLACED } from "../../crds/routing.ts";
import { isConflict, isNotFound, objectKey } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { addFinalizer, applyStatus, removeFinalizer } from "../../runtime/objects.ts";
import { type ControllerSettings, ROLLUP_DELAY_MS } from "../settings.ts";
import { ADDRESS_INDEXERS } from "./ipam.ts";
import { claimReleaser } from "./public-addresses.ts";
import { Routers, routerInformers } from "./routers.ts";
import { VLAN_INDEXERS, VlanAllocator } from "./vlans.ts";

export const NETWORK_FINALIZER = "stratus.io/network";

export function networkComponent(settings: ControllerSettings): Component {
  return {
    name: "network",
    description: "networking: VLAN allocation, address usage, network deletion guard",
    setup({ client, informers, metrics, logger, fieldManager }) {
      const networks = informers.for<Network>(Resources.networks, {
        indexers: { zone: (n) => [n.spec.zone] },
      });
      const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
        indexers: {
          network: (vm) => (vm.spec.nics ?? []).map((nic) => `${vm.metadata.namespace}/${nic.network}`),
        },
      });
      const addresses = informers.for<IPAddress>(Resources.ipAddresses, { indexers: ADDRESS_INDEXERS });
      const zones = informers.for<Zone>(Resources.zones);
      const vlans = informers.for<GuestVlan>(Resources.guestVlans, { indexers: VLAN_INDEXERS });
      const allocator = new VlanAllocator(client, vlans);
      const clusterRanges = watchClusterRanges(informers);
      const routing = routerInformers(informers);
      /** How many VMs of the network each host runs: a router goes where its guests are. */
      const vmHosts = (networkKey: string) => {
        const counts = new Map<string, number>();
        for (const vm of vms.byIndex("network", networkKey))
          if (vm.status?.host) counts.set(vm.status.host, (counts.get(vm.status.host) ?? 0) + 1);
        return counts;
      };
      const routers = new Routers(client, routing, addresses, vmHosts, fieldManager);

      /** Networks of the zone whose Ready is False: refused, or waiting for a VLAN. */
      const waiting = (zone: string): string[] =>
        networks
          .byIndex("zone", zone)
          .filter((n) => n.status?.conditions?.some((c) => c.type === "Ready" && c.status === "False"))
          .map(objectKey);
      /**
       * Networks a change of the cluster's `cidrs` may let in or refuse: those over them and those
       * refused for a reserved range. Not every network: Nodes change often, pod ranges seldom.
       */
      const overlapping = (cidrs: readonly string[]): string[] =>
        networks
          .list()
          .filter(
            (n) =>
              n.status?.conditions?.some((c) => c.type === "Ready" && c.reason === "CidrReserved") ||
              cidrs.some((cidr) => n.spec.cidr !== undefined && cidrsOverlap(cidr, n.spec.cidr)),
          )
          .map(objectKey);

      const networkController = new Controller({
        name: "network",
        logger,
        metrics,
        async reconcile(key, log) {
          const network = networks.get(key);
          await releaseOrphans(key, log);
          await releaseStaleVlans(key, network?.metadata.uid, log);
          if (!network) return;
          const users = vms
            .byIndex("network", key)
            .filter((vm) => !vm.metadata.deletionTimestamp)
            .map((vm) => vm.metadata.name as string)
            .sort();
          if (network.metadata.deletionTimestamp) {
            if (users.length === 0) {
              await allocator.releaseAll(key, log);
              await routers.releaseAddresses(network, log);
              if (await removeFinalizer(client, Resources.networks, network, NETWORK_FINALIZER))
                log.info("no VM uses the network; released it for deletion");
              return;
            }
            await writeNetworkStatus(
              network,
              {},
              {
                type: "InUse",
                status: "True",
                reason: "DeletionBlocked",
                message: `Deletion waits: VMs ${users.slice(0, 10).join(", ")}${users.length > 10 ? ` and ${users.length - 10} more` : ""} use the network.`,
              },
            );
            return;
          }
          if (await addFinalizer(client, Resources.networks, network, NETWORK_FINALIZER)) return;

          const zone = zones.get(network.spec.zone);
          // Refused: nothing implements the network. A VLAN it already holds stays until it is
          // deleted: its VMs may still be on it, and a VLAN handed on would join two segments.
          const held = allocator.held(network)[0];
          const kept = held !== undefined ? { vlan: held } : {};
          const refusal = cidrProblem(
            network,
            zone,
            networks.byIndex("zone", network.spec.zone),
            clusterRanges.current(),
          );
          if (refusal) {
            await writeNetworkStatus(network, kept, { type: "Ready", status: "False", ...refusal });
            return;
          }
          // No host agent joins a VXLAN across hosts yet: refused rather than a bridge per host that
          // silently leaves VMs on different hosts apart.
          if (network.spec.vni !== undefined) {
            await writeNetworkStatus(network, kept, {
              type: "Ready",
              status: "False",
              reason: "VxlanNotImplemented",
              message: `VXLAN networks (spec.vni ${network.spec.vni}) are not implemented yet: hosts would not join the segment, so VMs on different hosts could not reach each other. Use spec.vlan, or no segment.`,
            });
            return;
          }
          const outcome = await allocator.ensure(network, zoneVlanRange(zone, settings.vlanRange), log);
          if ("problem" in outcome) {
            await writeNetworkStatus(network, kept, { type: "Ready", status: "False", ...outcome.problem });
            return;
          }
          const segment = { vlan: outcome.vlan };
          const routed = await routers.reconcile(network, zone, log);
          const plan = addressPlan(network);
          const used = addresses.byIndex("network", key).length;
          const total = plan ? allocatableCount(plan) : 0;
          await writeNetworkStatus(
            network,
            {
              ...segment,
              ...(plan ? { addresses: { total, used, free: Math.max(total - used, 0) } } : {}),
              // Written even when undefined, so a router that is no longer wanted leaves status.
              router: routed.router,
            },
            {
              type: "Ready",
              status: "True",
              reason: "SegmentAllocated",
              message: `VLAN ${segment.vlan}.`,
            },
            ...(routed.condition ? [routed.condition] : []),
            {
              type: "InUse",
              status: users.length > 0 ? "True" : "False",
              reason: users.length > 0 ? "VirtualMachinesAttached" : "Unused",
              message: `${users.length} VM(s) use the network.`,
            },
          );
        },
      })
        // A network or VLAN going may let in a network of its zone that was refused or waits for a VLAN.
        .watch(networks, (n) => [objectKey(n), ...waiting(n.spec.zone)])
        .watch(zones, (z) => networks.byIndex("zone", z.metadata.name as string).map(objectKey))
        .watch(vlans, (v) => [`${v.spec.network.namespace}/${v.spec.network.name}`, ...waiting(v.spec.zone)])
        .watch(clusterRanges.serviceCidrs, (s) => overlapping(serviceRanges(s)))
        .watch(clusterRanges.nodes, (n) => overlapping(podRanges(n)))
        // Usage changes with every VM and address: a burst of them is one status write.
        .watch(vms, (vm) => (vm.spec.nics ?? []).map((nic) => `${vm.metadata.namespace}/${nic.network}`), {
          delayMs: ROLLUP_DELAY_MS,
        })
        .watch(addresses, (a) => [`${a.metadata.namespace}/${a.spec.network}`], { delayMs: ROLLUP_DELAY_MS })
        .watch(routing.publicAddresses, (p) => [`${p.metadata.namespace}/${p.spec.network}`])
        .watch(routing.portForwards, (r) =>
          routers.networkOfAddress(r.metadata.namespace as string, r.spec.publicIPAddress),
        )
        .watch(routing.egress, (r) => [`${r.metadata.namespace}/${r.spec.network}`])
        .watch(routing.loadBalancers, (r) =>
          routers.networkOfAddress(r.metadata.namespace as string, r.spec.publicIPAddress),
        )
        .watch(routing.firewall, (r) =>
          routers.networkOfAddress(r.metadata.namespace as string, r.spec.publicIPAddress),
        )
        // A router's host lost (or back) moves the routers it runs; a host joining may place waiting ones.
        .watch(routing.hosts, (h) =>
          networks
            .byIndex("zone", h.spec.zone)
            .filter((n) => n.status?.router?.host === h.metadata.name || !n.status?.router)
            .map(objectKey),
        );

      /**
       * Addresses whose VM is gone go at once: the garbage collector would remove them too, but
       * when it gets round to it, and a VM waiting for an address should not wait for that.
       */
      async function releaseOrphans(networkKey: string, log: Logger): Promise<void> {
        for (const address of addresses.byIndex("network", networkKey)) {
          const owner = address.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine");
          if (!owner) continue;
          const vm = vms.get(`${address.metadata.namespace}/${owner.name}`);
          if (vm && vm.metadata.uid === owner.uid) continue;
          await client
            .delete(Resources.ipAddresses, address.metadata.name as string, address.metadata.namespace, {
              uid: address.metadata.uid as string,
            })
            .catch((error: unknown) => {
              if (!isNotFound(error) && !isConflict(error)) throw error;
            });
          log.info({ address: address.spec.address, vm: owner.name }, "released the address of a deleted VM");
        }
      }

      /**
       * VLANs of a network that is gone (its finalizer removed by hand) or of a former network of
       * the name. The cache may lag a new network, so only a fresh read decides.
       */
      async function releaseStaleVlans(
        key: string,
        cachedUid: string | undefined,
        log: Logger,
      ): Promise<void> {
        if (!vlans.byIndex("network", key).some((v) => v.spec.network.uid !== cachedUid)) return;
        const [namespace, name] = key.split("/") as [string, string];
        const live = await client
          .get<Network>(Resources.networks, name, namespace)
          .catch((error: unknown) => {
            if (isNotFound(error)) return undefined;
            throw error;
          });
        await allocator.releaseAll(key, log, live?.metadata.uid);
      }

      async function writeNetworkStatus(
        network: Network,
        fields: Record<string, unknown>,
        ...given: ConditionInput[]
      ): Promise<void> {
        // A network once routed stays so (crds/routing.ts): a write that does not decide the router
        // (a refusal, a wait for a VLAN) keeps its router and RouterPlaced as they are.
        const placed = network.status?.conditions?.find((c) => c.type === ROUTER_PLACED);
        const keepsRouter = !("router" in fields) && placed !== undefined;
        const inputs: ConditionInput[] =
          keepsRouter && !given.some((c) => c.type === ROUTER_PLACED)
            ? [
                ...given,
                {
                  type: ROUTER_PLACED,
                  status: placed.status,
                  reason: placed.reason,
                  message: placed.message,
                },
              ]
            : given;
        if (keepsRouter && network.status?.router) fields = { ...fields, router: network.status.router };
        await applyStatus(
          client,
          Resources.networks,
          network,
          {
            observedGeneration: network.metadata.generation ?? 0,
            ...fields,
            conditions: ownConditions(
              network.status?.conditions as Condition[] | undefined,
              network.metadata.generation,
              inputs,
            ),
          },
          fieldManager,
        );
      }

      return [networkController, claimReleaser(client, routing, logger, metrics)];
    },
  };
}

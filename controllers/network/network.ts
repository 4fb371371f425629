// Networking: a VLAN for each network that names none, address usage in Network status (rate
// limited: it changes with every allocation), deletion held while VMs use the network, and the
// release of addresses whose VM is gone. Allocation is compute's, through ipam.ts.
import type { Logger } from "pino";
import { addressPlan, allocatableCount } from "../../crds/addressing.ts";
import { type IPAddress, type Network, Resources, type VirtualMachine } from "../../crds/index.ts";
import { isConflict, isNotFound, objectKey } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { addFinalizer, applyStatus, removeFinalizer } from "../../runtime/objects.ts";
import { type ControllerSettings, ROLLUP_DELAY_MS } from "../settings.ts";
import { ADDRESS_INDEXERS } from "./ipam.ts";

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
      // VLANs this process handed out that its cache may not show yet. Claims are made
      // synchronously (no await between looking and claiming), so workers never collide.
      const claimedVlans = new Map<string, number>();

      const vlanInUse = (zone: string, except: string): Set<number> => {
        const used = new Set<number>();
        for (const network of networks.byIndex("zone", zone)) {
          if (objectKey(network) === except) continue;
          const vlan = network.spec.vlan ?? network.status?.vlan;
          if (vlan !== undefined) used.add(vlan);
        }
        for (const [key, vlan] of claimedVlans) {
          const network = networks.get(key);
          if (network?.status?.vlan === vlan || !network) claimedVlans.delete(key);
          else if (key !== except && network.spec.zone === zone) used.add(vlan);
        }
        return used;
      };

      const networkController = new Controller({
        name: "network",
        logger,
        metrics,
        async reconcile(key, log) {
          const network = networks.get(key);
          if (!network) return;
          await releaseOrphans(key, log);
          const users = vms
            .byIndex("network", key)
            .filter((vm) => !vm.metadata.deletionTimestamp)
            .map((vm) => vm.metadata.name as string)
            .sort();
          if (network.metadata.deletionTimestamp) {
            if (users.length === 0) {
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

          let segment: { vlan?: number; vni?: number } = {};
          if (network.spec.vni !== undefined) segment = { vni: network.spec.vni };
          else if (network.spec.vlan !== undefined) segment = { vlan: network.spec.vlan };
          else if (network.status?.vlan !== undefined) segment = { vlan: network.status.vlan };
          else {
            const used = vlanInUse(network.spec.zone, key);
            const { first, last } = settings.vlanRange;
            let vlan: number | undefined;
            for (let candidate = first; candidate <= last && vlan === undefined; candidate++)
              if (!used.has(candidate)) vlan = candidate;
            if (vlan === undefined) {
              await writeNetworkStatus(
                network,
                {},
                {
                  type: "Ready",
                  status: "False",
                  reason: "VlansExhausted",
                  message: `Every VLAN of ${first}-${last} is in use in zone ${network.spec.zone}.`,
                },
              );
              return;
            }
            claimedVlans.set(key, vlan);
            segment = { vlan };
            log.info({ vlan }, "allocated a VLAN");
          }
          const plan = addressPlan(network);
          const used = addresses.byIndex("network", key).length;
          const total = plan ? allocatableCount(plan) : 0;
          await writeNetworkStatus(
            network,
            {
              ...segment,
              ...(plan ? { addresses: { total, used, free: Math.max(total - used, 0) } } : {}),
            },
            {
              type: "Ready",
              status: "True",
              reason: "SegmentAllocated",
              message: segment.vni !== undefined ? `VXLAN ${segment.vni}.` : `VLAN ${segment.vlan}.`,
            },
            {
              type: "InUse",
              status: users.length > 0 ? "True" : "False",
              reason: users.length > 0 ? "VirtualMachinesAttached" : "Unused",
              message: `${users.length} VM(s) use the network.`,
            },
          );
        },
      })
        .watch(networks)
        // Usage changes with every VM and address: a burst of them is one status write.
        .watch(vms, (vm) => (vm.spec.nics ?? []).map((nic) => `${vm.metadata.namespace}/${nic.network}`), {
          delayMs: ROLLUP_DELAY_MS,
        })
        .watch(addresses, (a) => [`${a.metadata.namespace}/${a.spec.network}`], { delayMs: ROLLUP_DELAY_MS });

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

      async function writeNetworkStatus(
        network: Network,
        fields: Record<string, unknown>,
        ...inputs: ConditionInput[]
      ): Promise<void> {
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

      return [networkController];
    },
  };
}

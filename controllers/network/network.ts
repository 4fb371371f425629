// Networking: a VLAN for each network that names none, address usage in Network status, deletion
// held while VMs use the network, and IPAM. An address is allocated by creating its IPAddress
// object, whose name is the address: etcd refuses a second create, so two allocators (workers,
// replicas, a stale leader) can never hand out the same address.

import type { Logger } from "pino";
import {
  addressPlan,
  addressProblem,
  allocatableAddresses,
  allocatableCount,
  ipToNumber,
} from "../../crds/addressing.ts";
import {
  type IPAddress,
  ipAddressName,
  type Network,
  Resources,
  type VirtualMachine,
} from "../../crds/index.ts";
import { isAlreadyExists, isConflict, isNotFound, objectKey } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { addFinalizer, applyStatus, ownerReference, removeFinalizer } from "../../runtime/objects.ts";
import type { ControllerSettings } from "../settings.ts";

export const NETWORK_FINALIZER = "stratus.io/network";

type Nic = NonNullable<VirtualMachine["spec"]["nics"]>[number];

export function networkComponent(settings: ControllerSettings): Component {
  return {
    name: "network",
    description: "networking: VLAN allocation, IPAM, network deletion guard",
    setup({ client, informers, metrics, logger, fieldManager, events }) {
      const networks = informers.for<Network>(Resources.networks, {
        indexers: { zone: (n) => [n.spec.zone] },
      });
      const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
        indexers: {
          network: (vm) => (vm.spec.nics ?? []).map((nic) => `${vm.metadata.namespace}/${nic.network}`),
        },
      });
      const addresses = informers.for<IPAddress>(Resources.ipAddresses, {
        indexers: {
          network: (a) => [`${a.metadata.namespace}/${a.spec.network}`],
          vm: (a) => (a.spec.virtualMachine ? [`${a.metadata.namespace}/${a.spec.virtualMachine}`] : []),
        },
      });
      // VLANs and address names this process handed out that its cache may not show yet. Claims
      // are made synchronously (no await between looking and claiming), so workers never collide.
      const claimedVlans = new Map<string, number>();
      /** IPAddress key -> the VM key and NIC it was created for. */
      const claimedAddresses = new Map<string, { vm: string; nic: string }>();

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
        .watch(vms, (vm) => (vm.spec.nics ?? []).map((nic) => `${vm.metadata.namespace}/${nic.network}`))
        .watch(addresses, (a) => [`${a.metadata.namespace}/${a.spec.network}`]);

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

      /** Creates the IPAddress for a NIC; returns why not when it cannot. */
      async function allocate(vm: VirtualMachine, nic: Nic, network: Network): Promise<string | undefined> {
        const plan = addressPlan(network);
        if (!plan) return undefined;
        const namespace = vm.metadata.namespace as string;
        const claim = (address: string) =>
          client.create<IPAddress>(Resources.ipAddresses, {
            apiVersion: "stratus.io/v1alpha1",
            kind: "IPAddress",
            metadata: {
              name: ipAddressName(network.metadata.name as string, address),
              namespace,
              ownerReferences: [ownerReference(Resources.virtualMachines, vm)],
            },
            spec: {
              network: network.metadata.name as string,
              address,
              virtualMachine: vm.metadata.name as string,
              nic: nic.name,
              static: nic.ipAddress !== undefined,
            },
          });
        if (nic.ipAddress) {
          const problem = addressProblem(plan, nic.ipAddress);
          if (problem) return `NIC ${nic.name}: ${problem}`;
          try {
            await claim(nic.ipAddress);
            return undefined;
          } catch (error) {
            if (!isAlreadyExists(error)) throw error;
            const holder = await client
              .get<IPAddress>(Resources.ipAddresses, ipAddressName(nic.network, nic.ipAddress), namespace)
              .catch(() => undefined);
            if (holder && holder.spec.virtualMachine === vm.metadata.name && holder.spec.nic === nic.name)
              return undefined;
            return `NIC ${nic.name}: ${nic.ipAddress} is already held by ${holder?.spec.virtualMachine ? `VM ${holder.spec.virtualMachine}` : "another allocation"}`;
          }
        }
        const taken = new Set(addresses.byIndex("network", objectKey(network)).map((a) => a.spec.address));
        for (const address of allocatableAddresses(plan)) {
          const name = `${namespace}/${ipAddressName(network.metadata.name as string, address)}`;
          if (taken.has(address)) {
            claimedAddresses.delete(name); // the cache shows it now: no need to remember the claim
            continue;
          }
          if (claimedAddresses.has(name)) continue;
          claimedAddresses.set(name, { vm: objectKey(vm), nic: nic.name });
          try {
            await claim(address);
            return undefined;
          } catch (error) {
            if (!isAlreadyExists(error)) {
              claimedAddresses.delete(name);
              throw error;
            }
            // Someone else holds it (our cache had not shown it yet): remember that, try the next one.
            claimedAddresses.set(name, { vm: "", nic: "" });
          }
        }
        return `network ${network.metadata.name} has no free address left (${allocatableCount(plan)} in its range)`;
      }

      const ipam = new Controller({
        name: "ipam",
        logger,
        metrics,
        async reconcile(key, log) {
          const vm = vms.get(key);
          if (!vm || vm.metadata.deletionTimestamp) return; // addresses go with the VM (owner references)
          const namespace = vm.metadata.namespace as string;
          const held = addresses.byIndex("vm", key);
          // Forget claims the cache now shows, so the set stays small.
          for (const a of held) claimedAddresses.delete(objectKey(a));
          const problems: { reason: string; message: string }[] = [];
          const wanted = new Set<string>();
          let pending = false;
          for (const nic of vm.spec.nics ?? []) {
            const network = networks.get(`${namespace}/${nic.network}`);
            if (!network || network.metadata.deletionTimestamp) {
              problems.push({
                reason: "NetworkNotFound",
                message: `NIC ${nic.name}: Network "${nic.network}" ${network ? "is being deleted" : "does not exist"}.`,
              });
              continue;
            }
            if (!network.spec.cidr) continue; // L2: no addressing
            // One address per NIC. Should two ever exist (two allocators racing), every allocator
            // keeps the same one, the lowest, and the other is released below.
            const mine = held
              .filter(
                (a) =>
                  a.spec.nic === nic.name &&
                  a.spec.network === nic.network &&
                  (nic.ipAddress === undefined || a.spec.address === nic.ipAddress),
              )
              .sort((a, b) => ipToNumber(a.spec.address) - ipToNumber(b.spec.address))[0];
            if (mine) {
              wanted.add(mine.metadata.name as string);
              continue;
            }
            if ([...claimedAddresses.values()].some((c) => c.vm === key && c.nic === nic.name)) {
              pending = true; // created moments ago; the watch brings it
              continue;
            }
            const problem = await allocate(vm, nic, network);
            if (problem)
              problems.push({
                reason: problem.includes("no free address") ? "AddressesExhausted" : "AddressUnavailable",
                message: problem,
              });
            else if (nic.ipAddress) wanted.add(ipAddressName(nic.network, nic.ipAddress));
            else pending = true;
          }
          if (pending) return undefined; // the new addresses re-queue the VM when the cache has them
          // Addresses of NICs that are gone, moved to another network, or changed static address.
          for (const stale of held.filter((a) => !wanted.has(a.metadata.name as string))) {
            await client
              .delete(Resources.ipAddresses, stale.metadata.name as string, namespace)
              .catch((error) => {
                if (!isNotFound(error)) throw error;
              });
            log.info({ address: stale.spec.address }, "released an address the VM no longer uses");
          }
          const [first] = problems;
          const condition: ConditionInput = first
            ? {
                type: "NetworksReady",
                status: "False",
                reason: first.reason,
                message: problems.map((p) => p.message).join(" "),
              }
            : {
                type: "NetworksReady",
                status: "True",
                reason: "AddressesAllocated",
                message: `${(vm.spec.nics ?? []).length} NIC(s) ready.`,
              };
          const conditions = ownConditions(
            vm.status?.conditions as Condition[] | undefined,
            vm.metadata.generation,
            [condition],
          );
          const before = (vm.status?.conditions as Condition[] | undefined)?.find(
            (c) => c.type === "NetworksReady",
          );
          if (await applyStatus(client, Resources.virtualMachines, vm, { conditions }, fieldManager)) {
            if (first && before?.reason !== first.reason)
              await events.record(Resources.virtualMachines, vm, {
                type: "Warning",
                reason: first.reason,
                action: "AllocateAddress",
                note: condition.message,
              });
          }
          return undefined;
        },
      })
        .watch(vms)
        .watch(addresses, (a) =>
          a.spec.virtualMachine ? [`${a.metadata.namespace}/${a.spec.virtualMachine}`] : [],
        )
        // A network that appears, or frees addresses, may unblock VMs waiting for it.
        .watch(networks, (n) =>
          vms
            .byIndex("network", objectKey(n))
            .filter(
              (vm) =>
                vm.status?.conditions?.some((c) => c.type === "NetworksReady" && c.status !== "True") ?? true,
            )
            .map(objectKey),
        );
      return [networkController, ipam];
    },
  };
}

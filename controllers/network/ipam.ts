// IPAM: an address is allocated by creating its IPAddress object, whose name is the address
// (claims.ts): etcd refuses a second create. The create's response proves the allocation; nobody
// waits for the cache.
import type { Logger } from "pino";
import {
  addressPlan,
  addressProblem,
  allocatableAddresses,
  allocatableCount,
  ipToNumber,
} from "../../crds/addressing.ts";
import { networkRefusal } from "../../crds/guest-ranges.ts";
import {
  type IPAddress,
  ipAddressName,
  type Network,
  Resources,
  type VirtualMachine,
} from "../../crds/index.ts";
import { routerProblem } from "../../crds/routing.ts";
import { isAlreadyExists, isNotFound, type KubeClient, objectKey } from "../../runtime/client.ts";
import type { Informer } from "../../runtime/informer.ts";
import { ownerReference } from "../../runtime/objects.ts";
import { claimFirstFree } from "./claims.ts";

type Nic = NonNullable<VirtualMachine["spec"]["nics"]>[number];

/** What a NIC has: its address (none on an L2 network), or why it has none. */
export type NicAddressing =
  | { nic: string; network: string; address?: string; problem?: undefined }
  | { nic: string; network: string; problem: { reason: string; message: string } };

/** The informer indexes of IPAddresses the allocator reads. */
export const ADDRESS_INDEXERS = {
  network: (a: IPAddress) => [`${a.metadata.namespace}/${a.spec.network}`],
  vm: (a: IPAddress) => (a.spec.virtualMachine ? [`${a.metadata.namespace}/${a.spec.virtualMachine}`] : []),
};

interface Claim {
  /** UID of the VM the address was created for; empty when someone else holds it. */
  vmUid: string;
  nic: string;
  address: string;
}

export class AddressAllocator {
  private readonly client: KubeClient;
  private readonly addresses: Informer<IPAddress>;
  private readonly networks: Informer<Network>;
  /**
   * IPAddress key -> who this process created it for, until the cache shows it. Claims are made
   * synchronously (no await between looking and claiming), so workers never collide.
   */
  private readonly claimed = new Map<string, Claim>();

  /** `addresses` must carry ADDRESS_INDEXERS. */
  constructor(client: KubeClient, addresses: Informer<IPAddress>, networks: Informer<Network>) {
    this.client = client;
    this.addresses = addresses;
    this.networks = networks;
  }

  /**
   * Makes sure every NIC of the VM holds an address of its network, and releases the addresses of
   * NICs that are gone, moved to another network, or changed their static address.
   */
  async ensureAddresses(vm: VirtualMachine, log: Logger): Promise<NicAddressing[]> {
    const namespace = vm.metadata.namespace as string;
    const held = this.addresses.byIndex("vm", objectKey(vm));
    for (const a of held) this.claimed.delete(objectKey(a)); // the cache shows it: no need to remember
    const wanted = new Set<string>();
    const outcomes = await Promise.all(
      (vm.spec.nics ?? []).map(async (nic): Promise<NicAddressing> => {
        const network = this.networks.get(`${namespace}/${nic.network}`);
        const base = { nic: nic.name, network: nic.network };
        if (!network || network.metadata.deletionTimestamp)
          return {
            ...base,
            problem: {
              reason: "NetworkNotFound",
              message: `NIC ${nic.name}: Network "${nic.network}" ${network ? "is being deleted" : "does not exist"}.`,
            },
          };
        const refusal = networkRefusal(network);
        if (refusal)
          return {
            ...base,
            problem: {
              reason: "NetworkRefused",
              message: `NIC ${nic.name}: Network "${nic.network}": ${refusal}`,
            },
          };
        if (!network.spec.cidr) return base; // L2: no addressing
        const address = this.heldAddress(vm, nic, held) ?? this.claimedAddress(vm, nic);
        const allocated = address ? { address } : await this.allocate(vm, nic, network);
        if (!("address" in allocated)) return { ...base, ...allocated };
        wanted.add(ipAddressName(nic.network, allocated.address));
        // The address is held, but the guest would find no gateway and no DHCP without its router.
        const routerless = routerProblem(network);
        if (routerless)
          return {
            ...base,
            problem: {
              reason: "RouterNotPlaced",
              message: `NIC ${nic.name}: Network "${nic.network}": ${routerless}`,
            },
          };
        return { ...base, ...allocated };
      }),
    );
    for (const stale of held.filter((a) => !wanted.has(a.metadata.name as string))) {
      await this.client
        .delete(Resources.ipAddresses, stale.metadata.name as string, namespace)
        .catch((error) => {
          if (!isNotFound(error)) throw error;
        });
      log.info({ address: stale.spec.address }, "released an address the VM no longer uses");
    }
    return outcomes;
  }

  /**
   * The NIC's address as the cache shows it. Should two exist (allocators racing), every allocator
   * keeps the same one: the one VM status records, else the lowest; the other is released.
   */
  private heldAddress(vm: VirtualMachine, nic: Nic, held: readonly IPAddress[]): string | undefined {
    const mine = held
      .filter(
        (a) =>
          a.spec.nic === nic.name &&
          a.spec.network === nic.network &&
          (nic.ipAddress === undefined || a.spec.address === nic.ipAddress),
      )
      .map((a) => a.spec.address);
    const recorded = vm.status?.nics?.find(
      (n) => n.name === nic.name && n.network === nic.network,
    )?.ipAddress;
    if (recorded && mine.includes(recorded)) return recorded;
    return mine.sort((a, b) => ipToNumber(a) - ipToNumber(b))[0];
  }

  /** An address this process created for the NIC moments ago, which the cache does not show yet. */
  private claimedAddress(vm: VirtualMachine, nic: Nic): string | undefined {
    const namespace = vm.metadata.namespace as string;
    for (const [key, claim] of this.claimed) {
      if (claim.vmUid !== vm.metadata.uid || claim.nic !== nic.name) continue;
      if (key !== `${namespace}/${ipAddressName(nic.network, claim.address)}`) continue;
      if (nic.ipAddress === undefined || nic.ipAddress === claim.address) return claim.address;
    }
    return undefined;
  }

  /** Creates the IPAddress for a NIC: its address, or why there is none. */
  private async allocate(
    vm: VirtualMachine,
    nic: Nic,
    network: Network,
  ): Promise<{ address: string } | { problem: { reason: string; message: string } }> {
    const plan = addressPlan(network);
    if (!plan) return { problem: { reason: "AddressUnavailable", message: `NIC ${nic.name}: no CIDR` } };
    const namespace = vm.metadata.namespace as string;
    const unavailable = (message: string) => ({ problem: { reason: "AddressUnavailable", message } });
    const claim = (address: string) =>
      this.client.create<IPAddress>(Resources.ipAddresses, {
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
      if (problem) return unavailable(`NIC ${nic.name}: ${problem}`);
      try {
        await claim(nic.ipAddress);
        return { address: nic.ipAddress };
      } catch (error) {
        if (!isAlreadyExists(error)) throw error;
        const holder = await this.client
          .get<IPAddress>(Resources.ipAddresses, ipAddressName(nic.network, nic.ipAddress), namespace)
          .catch(() => undefined);
        if (holder && holder.spec.virtualMachine === vm.metadata.name && holder.spec.nic === nic.name)
          return { address: nic.ipAddress };
        return unavailable(
          `NIC ${nic.name}: ${nic.ipAddress} is already held by ${holder?.spec.virtualMachine ? `VM ${holder.spec.virtualMachine}` : "another allocation"}`,
        );
      }
    }
    const taken = new Set(this.addresses.byIndex("network", objectKey(network)).map((a) => a.spec.address));
    const address = await claimFirstFree({
      candidates: allocatableAddresses(plan),
      key: (a) => `${namespace}/${ipAddressName(network.metadata.name as string, a)}`,
      taken: (a) => taken.has(a),
      claimed: this.claimed,
      mine: (a) => ({ vmUid: vm.metadata.uid as string, nic: nic.name, address: a }),
      others: (a) => ({ vmUid: "", nic: "", address: a }),
      create: claim,
    });
    if (address) return { address };
    return {
      problem: {
        reason: "AddressesExhausted",
        message: `network ${network.metadata.name} has no free address left (${allocatableCount(plan)} in its range)`,
      },
    };
  }
}

// Isolated networks' routers, the networking component's side (issue 17): the source-NAT address
// each network holds, the public addresses accounts associate (allocated by creating their
// PublicIPClaim, whose name is the address: etcd refuses a second create), the verdict on each rule
// (router-config.ts), and the router's host: kept while it is Ready, re-placed on a Ready host of
// the zone when it is lost. The result is the network's `status.router`, which the host agent of
// that host applies. Allocation and the release of claims: public-addresses.ts.
import type { Logger } from "pino";
import {
  type EgressFirewallRule,
  type FirewallRule,
  type Host,
  type IPAddress,
  type LoadBalancerRule,
  type Network,
  type PortForwardingRule,
  type PublicIPAddress,
  type PublicIPClaim,
  Resources,
  sourceNatName,
  type Zone,
} from "../../crds/index.ts";
import { isQuotaRefusal, quotaRefusalText } from "../../crds/resource-limits.ts";
import { isRouted, ROUTER_PLACED, wantsRouter } from "../../crds/routing.ts";
import {
  isConflict,
  isNotFound,
  type KubeClient,
  type KubeObject,
  objectKey,
  type ResourceType,
} from "../../runtime/client.ts";
import type { InformerFactory } from "../../runtime/component.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import type { Informer } from "../../runtime/informer.ts";
import { applyStatus, ownerReference } from "../../runtime/objects.ts";
import { isHostReady, isHostSchedulable, MAINTENANCE_STATES } from "../fabric/zone-status.ts";
import { PublicAddressAllocator, type PublicNetwork } from "./public-addresses.ts";
import { planRouter, type RouterStatus } from "./router-config.ts";

/** At most this many public addresses per network (as the CRD's status). */
export const MAX_PUBLIC_ADDRESSES = 64;

/** The router's host: the current one while Ready and not in maintenance, else the schedulable host with most of its VMs. */
export function placeRouter(
  current: string | undefined,
  hosts: readonly Host[],
  vmsPerHost: ReadonlyMap<string, number>,
): Host | undefined {
  // A host going into maintenance hands its routers on, as CloudStack moves its virtual routers.
  const kept = hosts.find(
    (h) =>
      h.metadata.name === current &&
      isHostReady(h) &&
      !h.spec.maintenance &&
      !MAINTENANCE_STATES.has(h.status?.resourceState ?? ""),
  );
  if (kept) return kept;
  return [...hosts]
    .filter(isHostSchedulable)
    .sort(
      (a, b) =>
        (vmsPerHost.get(b.metadata.name as string) ?? 0) - (vmsPerHost.get(a.metadata.name as string) ?? 0) ||
        (a.metadata.name as string).localeCompare(b.metadata.name as string),
    )[0];
}

/** The kinds of rule by the prefix of their verdicts' keys (router-config.ts). */
const RULE_KINDS = {
  pfr: Resources.portForwardingRules,
  lbr: Resources.loadBalancerRules,
  fwr: Resources.firewallRules,
  efr: Resources.egressFirewallRules,
} as const;

export interface RouterOutcome {
  router?: RouterStatus;
  condition?: ConditionInput;
}

export function routerInformers(informers: InformerFactory) {
  return {
    publicAddresses: informers.for<PublicIPAddress>(Resources.publicIPAddresses, {
      indexers: { network: (p) => [`${p.metadata.namespace}/${p.spec.network}`] },
    }),
    claims: informers.for<PublicIPClaim>(Resources.publicIPClaims, {
      indexers: { holder: (c) => [`${c.spec.holder.namespace}/${c.spec.holder.name}`] },
    }),
    portForwards: informers.for<PortForwardingRule>(Resources.portForwardingRules, {
      indexers: { address: (r) => [`${r.metadata.namespace}/${r.spec.publicIPAddress}`] },
    }),
    firewall: informers.for<FirewallRule>(Resources.firewallRules, {
      indexers: { address: (r) => [`${r.metadata.namespace}/${r.spec.publicIPAddress}`] },
    }),
    loadBalancers: informers.for<LoadBalancerRule>(Resources.loadBalancerRules, {
      indexers: { address: (r) => [`${r.metadata.namespace}/${r.spec.publicIPAddress}`] },
    }),
    egress: informers.for<EgressFirewallRule>(Resources.egressFirewallRules, {
      indexers: { network: (r) => [`${r.metadata.namespace}/${r.spec.network}`] },
    }),
    hosts: informers.for<Host>(Resources.hosts, { indexers: { zone: (h) => [h.spec.zone] } }),
  };
}

export type RouterInformers = ReturnType<typeof routerInformers>;

export class Routers {
  private readonly client: KubeClient;
  private readonly informers: RouterInformers;
  private readonly allocator: PublicAddressAllocator;
  private readonly addresses: Informer<IPAddress>;
  private readonly vmHosts: (networkKey: string) => ReadonlyMap<string, number>;
  private readonly fieldManager: string;

  constructor(
    client: KubeClient,
    informers: RouterInformers,
    addresses: Informer<IPAddress>,
    vmHosts: (networkKey: string) => ReadonlyMap<string, number>,
    fieldManager: string,
  ) {
    this.client = client;
    this.informers = informers;
    this.allocator = new PublicAddressAllocator(client, informers.claims);
    this.addresses = addresses;
    this.vmHosts = vmHosts;
    this.fieldManager = fieldManager;
  }

  /** The network key of a rule or public address, for watches. */
  networkOfAddress(namespace: string, publicAddress: string): string[] {
    const pip = this.informers.publicAddresses.get(`${namespace}/${publicAddress}`);
    return pip ? [`${namespace}/${pip.spec.network}`] : [];
  }

  /**
   * A deleted network's public addresses go with it, and their rules, as CloudStack releases them:
   * those made with kubectl too, which have no owner reference. Their claims follow (claimReleaser).
   */
  async releaseAddresses(network: Network, log: Logger): Promise<void> {
    const remove = (type: ResourceType, object: KubeObject) =>
      this.client
        .delete(type, object.metadata.name as string, object.metadata.namespace, {
          uid: object.metadata.uid as string,
        })
        .catch((error: unknown) => {
          if (!isNotFound(error) && !isConflict(error)) throw error;
        });
    for (const rule of this.informers.egress.byIndex("network", objectKey(network)))
      await remove(Resources.egressFirewallRules, rule);
    for (const pip of this.informers.publicAddresses.byIndex("network", objectKey(network))) {
      if (pip.metadata.deletionTimestamp) continue;
      // Its rules first: a rule left naming a released address would be nothing's.
      for (const rule of this.informers.portForwards.byIndex("address", objectKey(pip)))
        await remove(Resources.portForwardingRules, rule);
      for (const rule of this.informers.firewall.byIndex("address", objectKey(pip)))
        await remove(Resources.firewallRules, rule);
      for (const rule of this.informers.loadBalancers.byIndex("address", objectKey(pip)))
        await remove(Resources.loadBalancerRules, rule);
      await remove(Resources.publicIPAddresses, pip);
      log.info(
        { address: pip.status?.address, name: pip.metadata.name },
        "released a public address of the deleted network",
      );
    }
  }

  async reconcile(network: Network, zone: Zone | undefined, log: Logger): Promise<RouterOutcome> {
    const key = objectKey(network);
    const pips = this.informers.publicAddresses.byIndex("network", key);
    if (!wantsRouter(network, zone)) {
      for (const pip of pips)
        await this.writeAddress(pip, undefined, {
          type: "Allocated",
          status: "False",
          reason: "NoPublicNetwork",
          message: `Network ${network.metadata.name} has no router: only isolated networks in a zone with a public network (spec.publicNetwork) have public addresses.`,
        });
      // A network once routed stays so (crds/routing.ts): its zone lost its public network.
      if (isRouted(network))
        return {
          condition: {
            type: ROUTER_PLACED,
            status: "False",
            reason: "NoPublicNetwork",
            message: `Zone ${network.spec.zone} has no public network any more: the network's router cannot run.`,
          },
        };
      return {};
    }
    const publicNetwork = zone.spec.publicNetwork;
    let sourceNat = pips.find((p) => p.metadata.name === sourceNatName(network.metadata.name as string));
    if (!sourceNat) {
      try {
        sourceNat = await this.createSourceNat(network);
      } catch (error) {
        // The account's public-IP limit (resource type 1) counts the source-NAT address too.
        if (!isQuotaRefusal(error)) throw error;
        return {
          condition: {
            type: ROUTER_PLACED,
            status: "False",
            reason: "ResourceLimitExceeded",
            message: `The network's source-NAT address is past the account's limit: ${quotaRefusalText((error as Error).message)}`,
          },
        };
      }
      log.info({ address: sourceNat.metadata.name }, "made the network's source-NAT address");
    }
    const all = pips.some((p) => p.metadata.uid === sourceNat.metadata.uid) ? pips : [...pips, sourceNat];
    const allocated: PublicIPAddress[] = [];
    // The source-NAT address first, then the oldest: a network holds at most MAX_PUBLIC_ADDRESSES.
    const ordered = [...all].sort(
      (a, b) =>
        Number(b.metadata.uid === sourceNat.metadata.uid) -
          Number(a.metadata.uid === sourceNat.metadata.uid) ||
        (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? ""),
    );
    let holding = ordered.filter((p) => !p.metadata.deletionTimestamp && p.status?.address).length;
    for (const pip of ordered) {
      if (pip.metadata.deletionTimestamp) continue;
      if (holding >= MAX_PUBLIC_ADDRESSES && !pip.status?.address) {
        await this.writeAddress(pip, undefined, {
          type: "Allocated",
          status: "False",
          reason: "AddressLimitExceeded",
          message: `Network ${network.metadata.name} holds ${MAX_PUBLIC_ADDRESSES} public addresses, the most a router holds.`,
        });
        continue;
      }
      const held = pip.status?.address;
      const address = held ?? (await this.allocate(pip, zone.metadata.name as string, publicNetwork, log));
      if (address && !held) holding++;
      if (address) allocated.push({ ...pip, status: { ...pip.status, address } });
    }
    const guestAddresses = new Map<string, string>();
    for (const a of this.addresses.byIndex("network", key))
      if (a.spec.virtualMachine) guestAddresses.set(a.spec.virtualMachine, a.spec.address);
    const plan = planRouter({
      sourceNat: allocated.find((p) => p.metadata.uid === sourceNat.metadata.uid),
      publicAddresses: allocated,
      // Rules on every address of the network, allocated or not: each gets its verdict.
      portForwards: all.flatMap((p) => this.informers.portForwards.byIndex("address", objectKey(p))),
      firewall: all.flatMap((p) => this.informers.firewall.byIndex("address", objectKey(p))),
      loadBalancers: all.flatMap((p) => this.informers.loadBalancers.byIndex("address", objectKey(p))),
      egress: this.informers.egress.byIndex("network", key),
      egressDefaultAllow: (network.spec.egressPolicy ?? "Allow") === "Allow",
      guestAddress: (vm) => guestAddresses.get(vm),
    });
    for (const pip of allocated)
      await this.writeAddress(
        pip,
        pip === allocated.find((p) => p.metadata.uid === sourceNat.metadata.uid),
        undefined,
        guestAddresses,
      );
    await this.writeVerdicts(network, plan.verdicts);
    if (!plan.config)
      return {
        condition: {
          type: ROUTER_PLACED,
          status: "False",
          reason: "NoPublicAddress",
          message: `No free address in zone ${zone.metadata.name}'s public ranges for the network's source NAT.`,
        },
      };
    const host = placeRouter(
      network.status?.router?.host,
      this.informers.hosts.byIndex("zone", zone.metadata.name as string),
      this.vmHosts(key),
    );
    if (!host)
      return {
        condition: {
          type: ROUTER_PLACED,
          status: "False",
          reason: "NoReadyHost",
          message: `No Ready host in zone ${zone.metadata.name} can run the network's router.`,
        },
      };
    const hostName = host.metadata.name as string;
    if (network.status?.router?.host && network.status.router.host !== hostName)
      log.info(
        { from: network.status.router.host, to: hostName },
        "moved the router off a host that is not Ready",
      );
    return {
      router: { host: hostName, ...plan.config },
      condition: {
        type: ROUTER_PLACED,
        status: "True",
        reason: "Placed",
        message: `The router runs on host ${hostName} with source-NAT address ${plan.config.sourceNatAddress}.`,
      },
    };
  }

  private async createSourceNat(network: Network): Promise<PublicIPAddress> {
    const body: PublicIPAddress = {
      apiVersion: "stratus.io/v1alpha1",
      kind: "PublicIPAddress",
      metadata: {
        name: sourceNatName(network.metadata.name as string),
        namespace: network.metadata.namespace as string,
        ownerReferences: [ownerReference(Resources.networks, network)],
      },
      spec: { network: network.metadata.name as string },
    };
    try {
      return await this.client.create<PublicIPAddress>(Resources.publicIPAddresses, body);
    } catch (error) {
      if (!isConflict(error)) throw error; // AlreadyExists: the cache had not shown it yet
      return await this.client.get<PublicIPAddress>(
        Resources.publicIPAddresses,
        body.metadata.name as string,
        body.metadata.namespace,
      );
    }
  }

  /** The address `pip` holds once allocated; none left in the zone is said on it. */
  private async allocate(
    pip: PublicIPAddress,
    zone: string,
    publicNetwork: PublicNetwork,
    log: Logger,
  ): Promise<string | undefined> {
    const address = await this.allocator.allocate(pip, zone, publicNetwork);
    if (address) {
      if (!pip.status?.address)
        log.info({ publicAddress: address, holder: pip.metadata.name }, "allocated a public address");
      return address;
    }
    await this.writeAddress(pip, undefined, {
      type: "Allocated",
      status: "False",
      reason: "InsufficientAddressCapacity",
      message: `Insufficient address capacity: zone ${zone} has no free public address.`,
    });
    return undefined;
  }

  private async writeAddress(
    pip: PublicIPAddress,
    sourceNat: boolean | undefined,
    refusal?: ConditionInput,
    guestAddresses?: ReadonlyMap<string, string>,
  ): Promise<void> {
    const inputs: ConditionInput[] = [];
    if (refusal) inputs.push(refusal);
    else {
      inputs.push({
        type: "Allocated",
        status: "True",
        reason: "Allocated",
        message: `${pip.status?.address} is held for network ${pip.spec.network}.`,
      });
      const vm = pip.spec.staticNat?.virtualMachine;
      if (vm)
        inputs.push(
          sourceNat
            ? {
                type: "StaticNat",
                status: "False",
                reason: "SourceNatAddress",
                message: "The network's source-NAT address cannot be static NAT.",
              }
            : guestAddresses?.get(vm)
              ? {
                  type: "StaticNat",
                  status: "True",
                  reason: "Active",
                  message: `Maps to ${vm} (${guestAddresses.get(vm)}).`,
                }
              : {
                  type: "StaticNat",
                  status: "False",
                  reason: "VirtualMachineNotOnNetwork",
                  message: `VM ${vm} has no address on network ${pip.spec.network} (yet).`,
                },
        );
    }
    await applyStatus(
      this.client,
      Resources.publicIPAddresses,
      pip,
      {
        observedGeneration: pip.metadata.generation ?? 0,
        ...(refusal ? {} : { address: pip.status?.address, sourceNat: sourceNat ?? false }),
        conditions: ownConditions(
          pip.status?.conditions as Condition[] | undefined,
          pip.metadata.generation,
          inputs,
        ),
      },
      this.fieldManager,
    ).catch((error: unknown) => {
      if (!isNotFound(error)) throw error;
    });
  }

  private async writeVerdicts(
    network: Network,
    verdicts: ReadonlyMap<string, ConditionInput>,
  ): Promise<void> {
    const namespace = network.metadata.namespace as string;
    for (const [key, verdict] of verdicts) {
      const [kind, name] = key.split("/") as [keyof typeof RULE_KINDS, string];
      const type = RULE_KINDS[kind];
      const informer = {
        pfr: this.informers.portForwards,
        lbr: this.informers.loadBalancers,
        fwr: this.informers.firewall,
        efr: this.informers.egress,
      }[kind] as Informer<PortForwardingRule | LoadBalancerRule | FirewallRule | EgressFirewallRule>;
      const rule = informer.get(`${namespace}/${name}`);
      if (!rule) continue;
      await applyStatus(
        this.client,
        type,
        rule,
        {
          observedGeneration: rule.metadata.generation ?? 0,
          conditions: ownConditions(
            rule.status?.conditions as Condition[] | undefined,
            rule.metadata.generation,
            [verdict],
          ),
        },
        this.fieldManager,
      ).catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
    }
  }
}

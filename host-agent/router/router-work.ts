// The host agent's routers (issue 17): each isolated network whose `status.router.host` is this
// host gets its router here, a network namespace on the network's bridge and the zone's public
// bridge (router-namespace.ts) with dnsmasq leasing each guest its address (router-dhcp.ts), made
// exactly as the network controller configured it; a router no longer placed here is removed with
// everything it made. Level-triggered: the agent may be killed anywhere and applies again.
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { addressPlan } from "../../crds/addressing.ts";
import { type Network, Resources, type VirtualMachine, type Zone } from "../../crds/index.ts";
import { objectKey } from "../../runtime/client.ts";
import type { InformerFactory } from "../../runtime/component.ts";
import { Controller } from "../../runtime/controller.ts";
import type { Informer } from "../../runtime/informer.ts";
import type { RuntimeMetrics } from "../../runtime/metrics.ts";
import { arrivingNics, type GuestDataSource, guestDriveContent } from "../guest-data.ts";
import type { Hypervisor, Owner } from "../hypervisor.ts";
import { bridgeName, networkSpecFor } from "../network-xml.ts";
import { reservationsFor } from "../planner.ts";
import { HostProblem } from "../problem.ts";
import { metadataFiles } from "./metadata-files.ts";
import { ensureDhcp, stopDhcp } from "./router-dhcp.ts";
import { ensureMetadata, stopMetadata } from "./router-metadata.ts";
import {
  ensureRouter,
  listRouters,
  type RouterPlumbing,
  removeRouter,
  routerId,
  routerNamespace,
  routerPrefix,
} from "./router-namespace.ts";
import type { RouterRules } from "./router-rules.ts";

type RouterStatus = NonNullable<NonNullable<Network["status"]>["router"]>;

const prefixLength = (cidr: string) => Number(cidr.split("/")[1]);

/** Pure: the nftables rules of a router from its network and the controller's configuration. */
export function rulesFor(network: Network, router: RouterStatus): RouterRules {
  const plan = addressPlan(network);
  if (!plan || !network.spec.cidr)
    throw new HostProblem("RouterSetupFailed", `network ${objectKey(network)} has no CIDR for a router`);
  return {
    guestCidr: network.spec.cidr,
    guestGateway: plan.gateway,
    sourceNatIp: router.sourceNatAddress,
    staticNat: router.staticNat.map((n) => ({ publicIp: n.publicAddress, guestIp: n.guestAddress })),
    portForwards: router.portForwards.map((f) => ({
      publicIp: f.publicAddress,
      protocol: f.protocol,
      publicPorts: f.publicPort,
      guestIp: f.guestAddress,
      guestPorts: f.privatePort,
    })),
    loadBalancers: (router.loadBalancers ?? []).map((b) => ({
      publicIp: b.publicAddress,
      protocol: b.protocol,
      publicPort: b.publicPort,
      guestPort: b.privatePort,
      guestIps: b.guestAddresses,
      algorithm: b.algorithm,
    })),
    firewall: router.firewall.map((f) => ({
      publicIp: f.publicAddress,
      protocol: f.protocol,
      cidrs: f.cidrs,
      ...(f.ports ? { ports: f.ports } : {}),
    })),
    egressDefaultAllow: router.egressDefaultAllow ?? true,
    egress: (router.egress ?? []).map((e) => ({
      protocol: e.protocol,
      cidrs: e.destinations,
      ...(e.sources.length > 0 ? { sources: e.sources } : {}),
      ...(e.ports ? { ports: e.ports } : {}),
    })),
  };
}

/** A DNS label for dnsmasq from a VM name (which may hold dots). */
const hostLabel = (name: string) => name.split(".")[0]?.slice(0, 63).replace(/-+$/, "") || "guest";

export interface RouterWorkOptions {
  hostName: string;
  informers: InformerFactory;
  zone: () => Zone | undefined;
  /** Where guests' user data and keys come from (the metadata service); none: only meta-data. */
  guestData?: GuestDataSource;
  boundVms: () => VirtualMachine[];
  /** Where each router keeps its dnsmasq files. */
  stateDir: string;
  logger: Logger;
  metrics?: RuntimeMetrics | undefined;
}

export class RouterWork {
  /** The networks whose router runs here. */
  readonly routed: Informer<Network>;
  readonly controller: Controller;
  private readonly o: RouterWorkOptions;
  private context: { owner: Owner; hypervisor: Hypervisor } | undefined;
  /** Network key -> router id, for routers made here whose network has left the cache. */
  private readonly made = new Map<string, string>();
  /** Past the fence deadline: no router runs here until the Lease is renewed. */
  private fenced = false;

  constructor(options: RouterWorkOptions) {
    this.o = options;
    this.routed = options.informers.for<Network>(Resources.networks, {
      fieldSelector: `status.router.host=${options.hostName}`,
    });
    this.controller = new Controller({
      name: "host-agent-router",
      logger: options.logger,
      ...(options.metrics ? { metrics: options.metrics } : {}),
      reconcile: (key, log) => this.reconcile(key, log),
    }).watch(this.routed);
  }

  /** A VM here changed: the routers of its networks lease its addresses. */
  vmChanged(vm: VirtualMachine): void {
    for (const nic of vm.spec.nics ?? []) {
      const key = `${vm.metadata.namespace}/${nic.network}`;
      if (this.routed.get(key)) this.controller.queue.add(key);
    }
  }

  /** Called once the hypervisor is known; removes routers of this agent no network wants here. */
  async start(owner: Owner, hypervisor: Hypervisor, log: Logger): Promise<void> {
    this.context = { owner, hypervisor };
    const wanted = new Set(this.routed.list().map((n) => routerId(owner, n.metadata.uid as string)));
    for (const id of await listRouters(routerPrefix(owner)))
      if (!wanted.has(id)) {
        await this.teardown(id);
        log.info({ router: routerNamespace(id) }, "removed a router no network places here");
      }
    // The files of routers the fence watchdog removed while this agent was gone.
    const dirs = await readdir(this.o.stateDir).catch(() => [] as string[]);
    for (const id of dirs.filter((d) => d.startsWith(routerPrefix(owner)) && !wanted.has(d)))
      await rm(join(this.o.stateDir, id), { recursive: true, force: true });
  }

  /**
   * The heartbeat Lease was not renewed in time: every router of this agent goes, since the network
   * controller places them on other hosts and their public addresses must not answer twice.
   */
  async fence(log: Logger): Promise<void> {
    if (!this.context) return;
    const first = !this.fenced;
    this.fenced = true;
    const ids = await listRouters(routerPrefix(this.context.owner));
    for (const id of ids) await this.teardown(id);
    if (first && ids.length > 0)
      log.warn({ routers: ids.length }, "fenced: removed the routers of this host");
  }

  /** The Lease is current again: the routers placed here are made again. */
  resume(): void {
    if (!this.fenced) return;
    this.fenced = false;
    for (const key of this.routed.keys()) this.controller.queue.add(key);
  }

  networks(): Network[] {
    return this.routed.list().filter((n) => !n.metadata.deletionTimestamp);
  }

  private async reconcile(key: string, log: Logger): Promise<undefined> {
    if (!this.context) throw new Error("router work has not started");
    const { owner, hypervisor } = this.context;
    const network = this.routed.get(key);
    const router = network?.status?.router;
    if (!network || network.metadata.deletionTimestamp || router?.host !== this.o.hostName) {
      const id = this.made.get(key);
      if (id && (await this.teardown(id))) log.info({ router: routerNamespace(id) }, "removed the router");
      this.made.delete(key);
      return;
    }
    if (this.fenced) return; // resume() re-queues every router placed here
    const publicNetwork = this.o.zone()?.spec.publicNetwork;
    if (!publicNetwork)
      throw new HostProblem("RouterSetupFailed", "the zone has no public network for the router");
    const uid = network.metadata.uid as string;
    const id = routerId(owner, uid);
    this.made.set(key, id);
    const plan = addressPlan(network);
    if (!plan || !network.spec.cidr)
      throw new HostProblem("RouterSetupFailed", `network ${key} has no CIDR for a router`);
    // The guest side: the network's bridge on this host, without an address of the host's.
    const spec = networkSpecFor(network, owner);
    await hypervisor.syncNetwork(spec, []);
    const publicPrefix = prefixLength(publicNetwork.cidr);
    const plumbing: RouterPlumbing = {
      id,
      guestBridge: bridgeName(owner, uid),
      publicBridge: publicNetwork.bridge,
      guestAddress: `${plan.gateway}/${prefixLength(network.spec.cidr)}`,
      publicAddresses: router.publicAddresses.map((a) => `${a}/${publicPrefix}`),
      publicGateway: publicNetwork.gateway,
      rules: rulesFor(network, router),
    };
    await ensureRouter(plumbing);
    const vms = this.o.boundVms().filter((vm) => !vm.metadata.deletionTimestamp);
    await ensureDhcp({
      namespace: routerNamespace(id),
      stateDir: join(this.o.stateDir, id),
      guestGateway: plan.gateway,
      netmask: plan.netmask,
      networkAddress: network.spec.cidr.split("/")[0] as string,
      upstreamDns: network.spec.dns ?? this.o.zone()?.spec.dns ?? [],
      hosts:
        network.spec.dhcp === false
          ? []
          : reservationsFor(network, vms).map((r) => ({ mac: r.mac, ip: r.ip, hostname: hostLabel(r.name) })),
    });
    await ensureMetadata({
      namespace: routerNamespace(id),
      stateDir: join(this.o.stateDir, id),
      listen: plan.gateway,
      guests: await this.guestFiles(network, router, vms, log),
    });
    log.debug({ router: routerNamespace(id) }, "router applied");
  }

  /** What the metadata service tells each guest of the network here, by its address. */
  private async guestFiles(
    network: Network,
    router: RouterStatus,
    vms: readonly VirtualMachine[],
    log: Logger,
  ): Promise<Map<string, Map<string, Buffer>>> {
    const zone = this.o.zone()?.metadata.name as string;
    const networks = new Map([[network.metadata.name as string, network]]);
    const guests = new Map<string, Map<string, Buffer>>();
    for (const vm of vms) {
      if (vm.metadata.namespace !== network.metadata.namespace) continue;
      const nics = arrivingNics(vm, networks).filter((nic) => nic.ip);
      const address = nics[0]?.ip;
      if (!address) continue;
      try {
        const content = await guestDriveContent(vm, { nics }, zone, this.o.guestData);
        const publicIpv4 =
          router.staticNat.find((n) => n.guestAddress === address)?.publicAddress ?? router.sourceNatAddress;
        guests.set(address, metadataFiles(content, address, publicIpv4));
      } catch (error) {
        // The VM's own sync says why (a key pair missing, no API source): its guest waits for it.
        log.debug({ vm: vm.metadata.name, err: String(error) }, "no metadata for the guest yet");
      }
    }
    return guests;
  }

  /** Removes a router and its files; true when there was one. */
  private async teardown(id: string): Promise<boolean> {
    const stateDir = join(this.o.stateDir, id);
    await stopDhcp(stateDir);
    await stopMetadata(stateDir);
    const removed = await removeRouter(id);
    await rm(stateDir, { recursive: true, force: true });
    return removed;
  }
}

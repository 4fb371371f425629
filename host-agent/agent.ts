// The host agent: registers its Host, renews its heartbeat Lease, and runs the VMs bound to its
// host (status.host, written by the orchestration) through the Hypervisor seam. It watches only
// what is its own: those VMs, the Volumes whose disks are here, its Host, the networks its VMs
// use (one watch each) and the small cluster-wide catalogue (offerings, templates), plus the
// hypervisor's lifecycle events, all feeding one work queue per kind, like KubeVirt's virt-handler.

import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import {
  awaitingFailoverRestart,
  type DiskOffering,
  type Host,
  type Network,
  Resources,
  type ServiceOffering,
  type Template,
  type VirtualMachine,
} from "../crds/index.ts";
import { RESOURCE_LIMITS_QUOTA, RESOURCE_QUOTAS, type ResourceQuota } from "../crds/resource-limits.ts";
import { type KubeClient, objectKey } from "../runtime/client.ts";
import { InformerFactory } from "../runtime/component.ts";
import { Controller } from "../runtime/controller.ts";
import { EventRecorder } from "../runtime/events.ts";
import type { Informer } from "../runtime/informer.ts";
import type { RuntimeMetrics } from "../runtime/metrics.ts";
import { reconcileHostDomains } from "./adoption.ts";
import { agentWorld, usesNetwork, usesVolume } from "./agent-world.ts";
import { type AgentWrites, KubeAgentWrites } from "./agent-writes.ts";
import { FILE_IMAGES, prepareDisc } from "./disk-prep.ts";
import { domainName } from "./domain-xml.ts";
import { Fencing } from "./fencing.ts";
import { apiGuestDataSource, arrivingNics, configDrivePath, prepareConfigDrive } from "./guest-data.ts";
import type { Hypervisor, Owner } from "./hypervisor.ts";
import type { LibvirtConnection } from "./libvirt/connection.ts";
import { type Accelerator, LibvirtHypervisor } from "./libvirt-hypervisor.ts";
import { MigrationWork } from "./migration-sync.ts";
import { isoImage } from "./planner.ts";
import { HostProblem } from "./problem.ts";
import { ReferencedObjects } from "./referenced-objects.ts";
import { AGENT_VERSION, clusterIdentity, registerHost, runHeartbeat } from "./registration.ts";
import { RouterWork } from "./router/router-work.ts";
import { StorageWork } from "./storage-work.ts";
import { ensureVlanLink, removeVlanLink, vlanLinkName } from "./vlan.ts";
import { isHypervisorError, readyUnknown } from "./vm-status.ts";
import { VmSync } from "./vm-sync.ts";

export { AGENT_VERSION };

export interface HostAgentOptions {
  hostName: string;
  zone: string;
  client: KubeClient;
  /** The hypervisor; or a libvirt connection to build the libvirt one from. */
  hypervisor?: (owner: Owner) => Hypervisor;
  libvirt?: LibvirtConnection;
  /** kvm, tcg, or auto: KVM when it can run guests here (see kvmUsability). */
  accelerator?: Accelerator;
  logger: Logger;
  metrics: RuntimeMetrics;
  /** The cluster's identity; read from the API server (kube-system's UID) when not given. */
  clusterId?: string;
  leaseNamespace?: string;
  heartbeatIntervalMs?: number;
  leaseDurationSeconds?: number;
  /** How long a guest gets to shut down on ACPI before the domain is powered off. */
  shutdownGraceMs?: number;
  resyncPeriodMs?: number;
  /** Directory of the host's storage pool (default /var/lib/stratus/pools/<host>). */
  poolPath?: string;
  /** Where downloaded template images are cached (default /var/lib/stratus/cache/<host>). */
  cacheDir?: string;
  /** Directory of the guests' serial console sockets (default /run/stratus/console/<host>). */
  consoleDir?: string;
  /** The interface that carries VLAN-tagged guest traffic between hosts. */
  vlanUplink?: string;
  /** HOST:PORT of this agent's console relay, advertised in Host status for the API component. */
  /** Where the console server listens, and its certificate (the API component trusts only that). */
  consoleEndpoint?: { endpoint: string; certificate: string };
  /** Where the fence watchdog's files live (see fencing.ts); without it no watchdog runs. */
  fenceDir?: string;
  /** Live migration: the URI and address other hosts migrate guests here with, and a cap in MiB/s. */
  migration?: { uri?: string; address?: string; bandwidthMiBps?: number };
}

export class HostAgent {
  readonly hostName: string;
  private readonly options: HostAgentOptions;
  private readonly client: KubeClient;
  private readonly log: Logger;
  private readonly informers: InformerFactory;
  private readonly placed: Informer<VirtualMachine>;
  private readonly self: Informer<Host>;
  private readonly offerings: Informer<ServiceOffering>;
  private readonly templates: Informer<Template>;
  private readonly diskOfferings: Informer<DiskOffering>;
  private readonly limits: Informer<ResourceQuota>;
  /** Volumes, snapshots and storage pools: the agent's storage side. */
  private readonly storage: StorageWork;
  private readonly networks: ReferencedObjects<Network>;
  private readonly writes: AgentWrites;
  private readonly vmController: Controller;
  /** VM UID <-> key, so hypervisor events (which name domains by UID) find their VM. */
  private readonly keysByUid = new Map<string, string>();
  private hypervisor: Hypervisor | undefined;
  private sync: VmSync | undefined;
  private domainType: "kvm" | "qemu" | "test" = "qemu";
  private hypervisorReachable = true;
  private fencing: Fencing | undefined;
  private readonly migrations: MigrationWork;
  /** Routers of isolated networks placed on this host. */
  private readonly routers: RouterWork;

  constructor(options: HostAgentOptions) {
    if (!options.hypervisor && !options.libvirt)
      throw new Error("a host agent needs a hypervisor or a libvirt connection");
    this.options = options;
    this.hostName = options.hostName;
    this.client = options.client;
    this.log = options.logger;
    this.informers = new InformerFactory(this.client, {
      logger: this.log,
      metrics: options.metrics,
      resyncPeriodMs: options.resyncPeriodMs ?? 60_000,
    });
    this.placed = this.informers.for<VirtualMachine>(Resources.virtualMachines, {
      fieldSelector: `status.host=${this.hostName}`,
    });
    this.self = this.informers.for<Host>(Resources.hosts, {
      fieldSelector: `metadata.name=${this.hostName}`,
    });
    // The catalogue is small and changes rarely: one cluster-wide watch each.
    this.offerings = this.informers.for<ServiceOffering>(Resources.serviceOfferings);
    this.templates = this.informers.for<Template>(Resources.templates);
    this.diskOfferings = this.informers.for<DiskOffering>(Resources.diskOfferings);
    // Which accounts have a primary-storage limit: their disks wait for the storage grant.
    this.limits = this.informers.for<ResourceQuota>(RESOURCE_QUOTAS, {
      fieldSelector: `metadata.name=${RESOURCE_LIMITS_QUOTA}`,
    });
    this.networks = new ReferencedObjects<Network>(
      this.client,
      Resources.networks,
      { logger: this.log, metrics: options.metrics },
      (network) => {
        for (const key of this.vmsUsing((vm) => usesNetwork(vm, network))) this.vmController.queue.add(key);
      },
    );
    this.writes = new KubeAgentWrites(
      this.client,
      new EventRecorder(this.client, "stratus.io/host-agent", this.hostName, this.log),
    );
    this.storage = new StorageWork({
      hostName: this.hostName,
      zone: options.zone,
      client: this.client,
      informers: this.informers,
      writes: this.writes,
      placed: this.placed,
      self: () => this.self.get(this.hostName),
      requeueVms: () => {
        for (const key of this.placed.keys()) this.vmController.queue.add(key);
      },
      cacheDir: this.cacheDir(),
      logger: this.log,
      metrics: options.metrics,
    });
    this.migrations = new MigrationWork({
      hostName: this.hostName,
      client: this.client,
      informers: this.informers,
      logger: this.log,
      metrics: options.metrics,
      ...(options.migration?.bandwidthMiBps ? { bandwidthMiBps: options.migration.bandwidthMiBps } : {}),
      requeueVm: (key) => this.vmController.queue.add(key),
    });
    this.routers = new RouterWork({
      hostName: this.hostName,
      informers: this.informers,
      zone: () => this.storage.zoneObject(),
      boundVms: () => this.placed.list(),
      stateDir: join(this.cacheDir(), "routers"),
      guestData: apiGuestDataSource(this.client),
      logger: this.log,
      metrics: options.metrics,
    });
    this.vmController = new Controller({
      name: "host-agent-vm",
      logger: this.log,
      metrics: options.metrics,
      reconcile: (key, log) => this.reconcileVm(key, log),
    })
      .watch(this.placed)
      // Maintenance (or its end) concerns every VM here.
      .watch(this.self, () => this.placed.keys())
      .watch(this.offerings, (o) => this.vmsUsing((vm) => vm.spec.serviceOffering === o.metadata.name))
      .watch(this.templates, (t) => this.vmsUsing((vm) => vm.spec.template === t.metadata.name))
      .watch(this.storage.localVolumes, (volume) => this.vmsUsing((vm) => usesVolume(vm, volume)))
      // A disk released here: the VM using it may now take it.
      .watch(this.storage.releasedVolumes, (volume) => this.vmsUsing((vm) => usesVolume(vm, volume)));
    this.placed.addHandlers({
      onAdd: (vm) => {
        this.keysByUid.set(vm.metadata.uid as string, objectKey(vm));
        this.routers.vmChanged(vm);
      },
      onUpdate: (_, vm) => {
        this.keysByUid.set(vm.metadata.uid as string, objectKey(vm));
        this.routers.vmChanged(vm);
      },
      onDelete: (vm) => this.routers.vmChanged(vm),
    });
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const cluster = this.options.clusterId ?? (await clusterIdentity(this.client));
    const owner = { cluster, host: this.hostName };
    const poolPath =
      this.options.poolPath ?? `/var/lib/stratus/pools/${this.hostName}-${cluster.slice(0, 8)}`;
    const hypervisor =
      this.options.hypervisor?.(owner) ??
      new LibvirtHypervisor(this.options.libvirt as LibvirtConnection, {
        owner,
        poolPath,
        ...(this.options.accelerator ? { accelerator: this.options.accelerator } : {}),
      });
    this.hypervisor = hypervisor;
    // QEMU creates the console sockets here; only root and QEMU may enter.
    await mkdir(this.consoleDir(), { recursive: true, mode: 0o711 });
    const facts = await hypervisor.prepare();
    this.domainType = facts.domainType;
    this.log.info(
      {
        hypervisor: facts.type,
        domainType: facts.domainType,
        notes: (hypervisor as { facts?: string[] }).facts,
      },
      "host prepared",
    );
    await registerHost(this.client, {
      hostName: this.hostName,
      zone: this.options.zone,
      facts,
      ...(this.options.consoleEndpoint ? { consoleEndpoint: this.options.consoleEndpoint } : {}),
      ...(this.options.migration ? { migration: this.options.migration } : {}),
      log: this.log,
    });
    const pools = this.storage.prepare(hypervisor, poolPath);
    const fencing = this.startFencing(hypervisor, cluster);
    const world = agentWorld({
      hostName: this.hostName,
      client: this.client,
      placed: this.placed,
      self: this.self,
      offerings: this.offerings,
      templates: this.templates,
      diskOfferings: this.diskOfferings,
      limits: this.limits,
      localVolumes: this.storage.localVolumes,
      networks: this.networks,
      routedNetworks: () => this.routers.networks(),
      zone: () => this.storage.zoneStorage(),
      arriving: () => this.migrations.arrivingVms(),
    });
    const guestData = apiGuestDataSource(this.client);
    this.migrations.start({
      owner,
      hypervisor,
      world,
      consoleSocket: (uid) => this.consoleSocket(uid),
      configDrive: (vm, networks) =>
        prepareConfigDrive(
          vm,
          { nics: arrivingNics(vm, networks) },
          {
            cacheDir: this.cacheDir(),
            zone: world.zone().name,
            source: guestData,
          },
        ),
      configDrivePath: (uid) => configDrivePath(this.cacheDir(), uid),
      disc: async (vm) => {
        const input = { vm, iso: vm.spec.iso ? world.template(vm.spec.iso) : undefined };
        const disc = isoImage({
          ...input,
          paths: { cache: this.cacheDir(), consoleSocket: "" },
          zone: world.zone(),
        });
        return disc ? prepareDisc(FILE_IMAGES, this.hostName, vm, disc) : undefined;
      },
    });
    this.sync = new VmSync({
      owner,
      hypervisor,
      world,
      migration: this.migrations,
      writes: this.writes,
      domainType: () => this.domainType,
      storage: pools,
      pausedForCopy: this.storage.pausedForCopy,
      snapshots: this.storage.snapshotAccess,
      guestData,
      paths: { cache: this.cacheDir(), consoleSocket: (uid) => this.consoleSocket(uid) },
      shutdownGraceMs: this.options.shutdownGraceMs ?? 60_000,
      mayStart: async (vm) => {
        // HA guests, and any guest arriving after a failover (a degraded host's), start under a claim.
        if (!this.isHighlyAvailable(vm) && !awaitingFailoverRestart(vm)) return undefined;
        const held = await fencing.claimStart(vm);
        if (held) this.log.info({ vm: objectKey(vm), reason: held }, "HA guest not started");
        return held;
      },
      ...(this.options.vlanUplink
        ? {
            afterNetworkSync: (nic) => this.tagVlan(nic.spec),
            afterNetworkRemoved: async (bridge) => void (await removeVlanLink(bridge)),
          }
        : {}),
    });
    await hypervisor.onDomainEvent((uid) => {
      const key = this.keysByUid.get(uid);
      if (key) this.vmController.queue.add(key);
    });
    this.informers.start();
    await this.informers.waitForSync();
    await this.storage.start();
    await reconcileHostDomains({
      client: this.client,
      hypervisor,
      owner,
      bound: new Set(this.placed.list().map((vm) => vm.metadata.uid as string)),
      writes: this.writes,
      log: this.log,
    });
    await this.routers.start(owner, hypervisor, this.log);
    await this.sync.removeUnusedNetworks(this.log);
    await Promise.all([
      this.vmController.run(signal),
      this.migrations.controller.run(signal),
      this.storage.run(signal),
      this.routers.controller.run(signal),
      runHeartbeat(
        {
          client: this.client,
          hostName: this.hostName,
          namespace: this.options.leaseNamespace ?? "stratus-system",
          intervalMs: this.options.heartbeatIntervalMs ?? 5_000,
          leaseDurationSeconds: this.leaseDurationSeconds(),
          log: this.log,
          onRenewed: async (renewedAtMs) => {
            await fencing.renewed(renewedAtMs);
            this.routers.resume();
            await this.reportFencing();
          },
          onBeat: async () => {
            await this.watchHypervisor();
            this.storage.onHeartbeat();
          },
        },
        signal,
      ),
    ]);
    fencing.stop();
    await this.networks.stop();
    await this.informers.stop();
  }

  private leaseDurationSeconds(): number {
    return this.options.leaseDurationSeconds ?? 20;
  }

  private isHighlyAvailable(vm: VirtualMachine): boolean {
    return this.offerings.get(vm.spec.serviceOffering)?.spec.highAvailability === true;
  }

  private startFencing(hypervisor: Hypervisor, cluster: string): Fencing {
    this.fencing = new Fencing({
      client: this.client,
      host: this.hostName,
      cluster,
      libvirtUri: hypervisor.uri,
      leaseDurationMs: this.leaseDurationSeconds() * 1000,
      log: this.log,
      ...(this.options.fenceDir ? { dir: this.options.fenceDir } : {}),
      haVms: () =>
        this.placed
          .list()
          .filter((vm) => this.isHighlyAvailable(vm))
          .map((vm) => vm.metadata.uid as string),
      powerOff: async (uid) => {
        const domain = await hypervisor.observe(uid);
        if (!domain || domain.state === "shutoff") return false;
        await hypervisor.powerOff(uid);
        return true;
      },
      // The network controller re-places this host's routers once it is NotReady: their public
      // addresses must not answer from two hosts.
      atDeadline: () => this.routers.fence(this.log),
    });
    return this.fencing;
  }

  /** Once the Lease is renewed again: what was fenced while this host could not say so. */
  private async reportFencing(): Promise<void> {
    const record = await this.fencing?.takeFenceRecord();
    const host = this.self.get(this.hostName);
    if (!record || !host) return;
    const how =
      record.how === "agent-killed"
        ? "the simulated host's agent was killed with its guests"
        : `its watchdog powered off ${record.domains.length} HA guest(s)`;
    const note = `The heartbeat Lease was not renewed by ${new Date(record.deadline).toISOString()}: ${how} at ${new Date(record.at).toISOString()}.`;
    this.log.warn({ record }, note);
    await this.writes.event(Resources.hosts, host, {
      type: "Warning",
      reason: "Fenced",
      action: "Fence",
      note,
    });
    for (const vm of this.placed.list().filter((v) => record.domains.includes(v.metadata.uid as string)))
      await this.writes.event(Resources.virtualMachines, vm, {
        type: "Warning",
        reason: "Fenced",
        action: "Fence",
        note: `Powered off on ${this.hostName}: ${note}`,
      });
  }

  isSynced(): boolean {
    return this.informers.unsynced().length === 0;
  }

  /** The Stratus domains on this host's hypervisor, with their owner and disk files (for /debug/domains). */
  async describeDomains() {
    const hypervisor = this.requireHypervisor();
    const stratus = (await hypervisor.listDomains()).map(({ disks, ...domain }) => ({
      name: domainName(domain.vmUid),
      ...domain,
      disks: disks.map((d) => d.path),
    }));
    return [...stratus, ...(await hypervisor.otherDomains())];
  }

  /** This agent's networks with their DHCP reservations (for /debug/networks). */
  async describeNetworks() {
    const hypervisor = this.requireHypervisor();
    const names = await hypervisor.ownNetworks();
    return Promise.all(
      names.map(async (name) => ({ name, dhcpHosts: await hypervisor.networkReservations(name) })),
    );
  }

  /** The console socket of a VM placed on this host (for the console relay), or undefined. */
  consoleSocketOf(vmUid: string): string | undefined {
    return this.placed.list().some((vm) => vm.metadata.uid === vmUid) ? this.consoleSocket(vmUid) : undefined;
  }

  /** The unix socket QEMU serves the VM's serial console on (the console relay reads it). */
  consoleSocket(vmUid: string): string {
    return join(this.consoleDir(), `${vmUid}.sock`);
  }

  private consoleDir(): string {
    return this.options.consoleDir ?? `/run/stratus/console/${this.hostName}`;
  }

  private cacheDir(): string {
    return this.options.cacheDir ?? `/var/lib/stratus/cache/${this.hostName}`;
  }

  private requireHypervisor(): Hypervisor {
    if (!this.hypervisor) throw new Error("the host agent is not running yet");
    return this.hypervisor;
  }

  private vmsUsing(uses: (vm: VirtualMachine) => boolean): string[] {
    return this.placed.list().filter(uses).map(objectKey);
  }

  /**
   * A libvirt failure (the daemon down or restarting, a call refused) is reported on the VM and
   * retried with backoff; the connection is reopened once the daemon answers again.
   */
  private async reconcileVm(key: string, log: Logger) {
    const sync = this.sync;
    if (!sync) return { requeueAfterMs: 1_000 };
    const uid = [...this.keysByUid].find(([, k]) => k === key)?.[0];
    try {
      await this.requireHypervisor().ensureConnected();
      const result = await sync.sync(key, uid, log);
      if (uid && !this.placed.get(key)) this.keysByUid.delete(uid);
      await this.networks.retain(this.referencedNetworks());
      return result;
    } catch (error) {
      const vm = this.placed.get(key);
      if (
        !(error instanceof HostProblem) &&
        vm &&
        !vm.metadata.deletionTimestamp &&
        isHypervisorError(error)
      ) {
        await this.writes
          .vmStatus(vm, {
            state: "Unknown",
            observedGeneration: vm.metadata.generation ?? 0,
            conditions: readyUnknown(vm, `${(error as Error).message} (host ${this.hostName})`),
          })
          .catch(() => undefined);
      }
      throw error;
    }
  }

  private referencedNetworks(): Set<string> {
    return new Set(
      this.placed
        .list()
        .flatMap((vm) => (vm.spec.nics ?? []).map((nic) => `${vm.metadata.namespace}/${nic.network}`)),
    );
  }

  /**
   * A daemon that went away produces no domain event, so each beat looks: on a change either way
   * every bound VM is re-queued (and reports HypervisorError, or recovers once reconnected).
   */
  private async watchHypervisor(): Promise<void> {
    const hypervisor = this.requireHypervisor();
    let reachable = hypervisor.isAlive();
    if (!reachable)
      reachable = await hypervisor.ensureConnected().then(
        () => true,
        () => false,
      );
    if (reachable === this.hypervisorReachable) return;
    this.hypervisorReachable = reachable;
    if (reachable) this.log.info("the libvirt daemon answers again");
    else this.log.warn("lost the libvirt daemon");
    for (const key of this.placed.keys()) this.vmController.queue.add(key);
  }

  private async tagVlan(network: { name: string; bridge: string; vlan?: number }): Promise<void> {
    if (!this.options.vlanUplink || network.vlan === undefined) return;
    await ensureVlanLink({
      uplink: this.options.vlanUplink,
      vlan: network.vlan,
      name: vlanLinkName(network.bridge),
      bridge: network.bridge,
    });
  }
}

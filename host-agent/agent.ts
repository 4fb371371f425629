// The host agent: registers its Host, renews its heartbeat Lease, and turns the VMs placed on its
// host (VM status.host, written by the scheduler) into libvirt domains, reporting what really
// runs. It watches only those VMs plus libvirt's own lifecycle events, both feeding one work
// queue, like KubeVirt's virt-handler. When its Host goes into maintenance it stops its VMs and
// hands them back to the scheduler.
import { mkdir } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Logger } from "pino";
import {
  type DiskOffering,
  type Host,
  type IPAddress,
  type Network,
  needsRootVolume,
  RESTART_ANNOTATION,
  Resources,
  rootVolumeName,
  type ServiceOffering,
  type Template,
  type VirtualMachine,
  type Volume,
} from "../crds/index.ts";
import { formatQuantity, parseQuantity } from "../crds/quantity.ts";
import { isAlreadyExists, isConflict, isNotFound, type KubeClient, objectKey } from "../runtime/client.ts";
import { InformerFactory } from "../runtime/component.ts";
import { Controller } from "../runtime/controller.ts";
import { EventRecorder } from "../runtime/events.ts";
import type { Informer } from "../runtime/informer.ts";
import { LEASE, type Lease } from "../runtime/leader-election.ts";
import type { RuntimeMetrics } from "../runtime/metrics.ts";
import { addFinalizer, applyStatus, removeFinalizer } from "../runtime/objects.ts";
import { kubeMicroTime, sleep } from "../runtime/time.ts";
import {
  type AttachedVolume,
  DATA_VOLUME_PREFIX,
  DiskManager,
  dataVolumeName,
  STORAGE_POOL,
  type VmDisks,
} from "./disks.ts";
import { buildDomainXml, disksIn, diskTarget, diskXml, domainName, macFor, vmUidOf } from "./domain-xml.ts";
import {
  type DomainInfo,
  type LibvirtConnection,
  LibvirtError,
  VIR_ERR_NO_SUPPORT,
  type VolumeInfo,
} from "./libvirt/connection.ts";
import {
  bridgeName,
  buildNetworkXml,
  type DhcpHost,
  dhcpHostsIn,
  dhcpHostXml,
  libvirtNetworkName,
  NETWORK_PREFIX,
} from "./network-xml.ts";
import { HostProblem, Waiting } from "./problem.ts";
import { ensureVlanLink, removeVlanLinks, vlanLinkName } from "./vlan.ts";
import { desiredVmStatus, runIntent } from "./vm-status.ts";

/**
 * One finalizer per host: each agent cleans up only what it created on its own host, and an
 * object is gone only when every host that held a piece of it has let go.
 */
export function agentFinalizer(hostName: string): string {
  return `host.stratus.io/${hostName}`;
}
export const AGENT_VERSION = "0.1.0";

export interface HostAgentOptions {
  hostName: string;
  zone: string;
  client: KubeClient;
  libvirt: LibvirtConnection;
  logger: Logger;
  metrics: RuntimeMetrics;
  leaseNamespace?: string;
  heartbeatIntervalMs?: number;
  leaseDurationSeconds?: number;
  /** How long a guest gets to shut down on ACPI before the domain is destroyed. */
  shutdownGraceMs?: number;
  resyncPeriodMs?: number;
  /** Directory of the host's storage pool (default /var/lib/stratus/pools/<host>). */
  poolPath?: string;
  /** Where downloaded template images are cached (default /var/lib/stratus/cache/<host>). */
  cacheDir?: string;
  /** Directory of the guests' serial console sockets (default /run/stratus/console/<host>). */
  consoleDir?: string;
  /**
   * The interface that carries VLAN-tagged guest traffic between hosts. Without it a network's
   * VLAN is recorded but its bridge stays local to the host.
   */
  vlanUplink?: string;
  /** HOST:PORT of this agent's console relay, advertised in Host status for the API component. */
  consoleEndpoint?: string;
}

export class HostAgent {
  readonly hostName: string;
  private readonly options: HostAgentOptions;
  private readonly client: KubeClient;
  private readonly libvirt: LibvirtConnection;
  private readonly log: Logger;
  private readonly fieldManager: string;
  private readonly finalizer: string;
  private readonly informers: InformerFactory;
  private readonly placed: Informer<VirtualMachine>;
  private readonly self: Informer<Host>;
  private readonly offerings: Informer<ServiceOffering>;
  private readonly templates: Informer<Template>;
  private readonly diskOfferings: Informer<DiskOffering>;
  private readonly volumes: Informer<Volume>;
  private readonly networks: Informer<Network>;
  private readonly addresses: Informer<IPAddress>;
  private readonly disks: DiskManager;
  private readonly controller: Controller;
  private readonly volumeController: Controller;
  private readonly events: EventRecorder;
  /** VM UID -> key, so libvirt events (which name domains by UID) find their VM. */
  private readonly keysByUid = new Map<string, string>();
  private readonly shutdownRequested = new Map<string, number>();
  private hypervisorType = "TEST";
  private libvirtReachable = true;

  constructor(options: HostAgentOptions) {
    this.options = options;
    this.hostName = options.hostName;
    this.client = options.client;
    this.libvirt = options.libvirt;
    this.log = options.logger;
    this.fieldManager = `stratus-host-agent/${options.hostName}`;
    this.finalizer = agentFinalizer(options.hostName);
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
    this.offerings = this.informers.for<ServiceOffering>(Resources.serviceOfferings);
    this.templates = this.informers.for<Template>(Resources.templates);
    this.diskOfferings = this.informers.for<DiskOffering>(Resources.diskOfferings);
    // Every Volume for now: until the storage controller binds volumes to hosts (status.host),
    // the agent realises the volumes its VMs attach.
    this.volumes = this.informers.for<Volume>(Resources.volumes);
    this.networks = this.informers.for<Network>(Resources.networks);
    this.addresses = this.informers.for<IPAddress>(Resources.ipAddresses, {
      indexers: {
        vm: (a) => (a.spec.virtualMachine ? [`${a.metadata.namespace}/${a.spec.virtualMachine}`] : []),
      },
    });
    this.disks = new DiskManager({
      libvirt: this.libvirt,
      pool: STORAGE_POOL,
      cacheDir: options.cacheDir ?? `/var/lib/stratus/cache/${options.hostName}`,
      hostName: options.hostName,
    });
    this.events = new EventRecorder(this.client, "stratus.io/host-agent", this.hostName, this.log);
    this.controller = new Controller({
      name: "host-agent-vm",
      logger: this.log,
      metrics: options.metrics,
      reconcile: (key, log) => this.reconcileVm(key, log),
    })
      .watch(this.placed)
      // Maintenance (or its end) concerns every VM here.
      .watch(this.self, () => this.boundVms().map(objectKey))
      // An offering, template or volume that appears or changes may unblock VMs waiting for it.
      .watch(this.offerings, (offering) =>
        this.vmsUsing((vm) => vm.spec.serviceOffering === offering.metadata.name),
      )
      .watch(this.templates, (template) => this.vmsUsing((vm) => vm.spec.template === template.metadata.name))
      // A data volume concerns the VMs attaching it; a ROOT volume the VM owning it.
      .watch(this.volumes, (volume) =>
        this.vmsUsing(
          (vm) =>
            attaches(vm, volume) ||
            (volume.metadata.namespace === vm.metadata.namespace &&
              (volume.metadata.ownerReferences ?? []).some((o) => o.uid === vm.metadata.uid)),
        ),
      )
      .watch(this.networks, (network) =>
        this.vmsUsing(
          (vm) =>
            vm.metadata.namespace === network.metadata.namespace &&
            (vm.spec.nics ?? []).some((n) => n.network === network.metadata.name),
        ),
      )
      .watch(this.addresses, (address) =>
        address.spec.virtualMachine ? [`${address.metadata.namespace}/${address.spec.virtualMachine}`] : [],
      );
    this.volumeController = new Controller({
      name: "host-agent-volume",
      logger: this.log,
      metrics: options.metrics,
      reconcile: (key, log) => this.reconcileVolumeDeletion(key, log),
    })
      .watch(this.volumes, (volume) =>
        volume.metadata.finalizers?.includes(this.finalizer) ? [objectKey(volume)] : [],
      )
      // A VM that goes away may release the volumes it held.
      .watch(this.placed, (vm) => volumeKeys(vm));
    this.placed.addHandlers({
      onAdd: (vm) => this.keysByUid.set(vm.metadata.uid as string, objectKey(vm)),
      onUpdate: (_, vm) => this.keysByUid.set(vm.metadata.uid as string, objectKey(vm)),
    });
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    // QEMU creates the console sockets here; only root and QEMU may enter.
    await mkdir(this.options.consoleDir ?? `/run/stratus/console/${this.hostName}`, {
      recursive: true,
      mode: 0o711,
    });
    await this.register();
    await this.libvirt.onDomainEvent((name, event) => {
      const uid = vmUidOf(name);
      const key = uid ? this.keysByUid.get(uid) : undefined;
      this.log.debug({ domain: name, event, key }, "libvirt event");
      if (key) this.controller.queue.add(key);
    });
    this.informers.start();
    await this.informers.waitForSync();
    await this.removeOrphans();
    await Promise.all([
      this.controller.run(signal),
      this.volumeController.run(signal),
      this.heartbeat(signal),
    ]);
    await this.informers.stop();
  }

  /** What libvirt runs on this host, with the disk files of Stratus domains (for /debug/domains). */
  async describeDomains(): Promise<(DomainInfo & { disks?: string[] })[]> {
    const domains = await this.libvirt.listDomains();
    return Promise.all(
      domains.map(async (domain) => {
        if (!vmUidOf(domain.name)) return domain;
        const xml = await this.libvirt.domainXml(domain.name);
        return { ...domain, disks: [...xml.matchAll(/<source file='([^']*)'/g)].map((m) => m[1] as string) };
      }),
    );
  }

  /** Stratus networks on this host with their DHCP reservations (for /debug/networks). */
  async describeNetworks(): Promise<{ name: string; dhcpHosts: DhcpHost[] }[]> {
    const names = (await this.libvirt.listNetworks()).filter((n) => n.startsWith(NETWORK_PREFIX));
    return Promise.all(
      names.map(async (name) => ({
        name,
        dhcpHosts: dhcpHostsIn((await this.libvirt.networkXml(name)) ?? ""),
      })),
    );
  }

  isSynced(): boolean {
    return this.informers.unsynced().length === 0;
  }

  private vmsUsing(uses: (vm: VirtualMachine) => boolean): string[] {
    return this.boundVms().filter(uses).map(objectKey);
  }

  private boundVms(): VirtualMachine[] {
    return this.placed.list().filter((vm) => this.isBound(vm));
  }

  private isBound(vm: VirtualMachine): boolean {
    return vm.status?.host === this.hostName;
  }

  private inMaintenance(): boolean {
    return this.self.get(this.hostName)?.spec.maintenance === true;
  }

  /** Creates the Host (the zone is the administrator's once it exists) and reports its facts. */
  private async register(): Promise<void> {
    const [node, versions] = await Promise.all([this.libvirt.nodeInfo(), this.libvirt.versions()]);
    const pool = await this.libvirt.ensureDirectoryPool(
      STORAGE_POOL,
      this.options.poolPath ?? `/var/lib/stratus/pools/${this.hostName}`,
    );
    this.hypervisorType = versions.type;
    try {
      await this.client.create(Resources.hosts, {
        metadata: { name: this.hostName },
        spec: { zone: this.options.zone },
      });
      this.log.info({ zone: this.options.zone }, "registered the host");
    } catch (error) {
      if (!isAlreadyExists(error)) throw error;
    }
    const host = await this.client.get<Host>(Resources.hosts, this.hostName);
    await applyStatus(
      this.client,
      Resources.hosts,
      host,
      {
        hypervisor: {
          type: versions.type === "TEST" ? "Simulator" : versions.type === "QEMU" ? "QEMU" : "KVM",
          version: versions.hypervisor,
          libvirtVersion: versions.libvirt,
          uri: this.libvirt.uri,
        },
        agentVersion: AGENT_VERSION,
        ...(this.options.consoleEndpoint ? { consoleEndpoint: this.options.consoleEndpoint } : {}),
        capacity: {
          cpu: node.cpus,
          memory: formatQuantity(BigInt(node.memoryBytes)),
          storage: formatQuantity(pool.capacityBytes),
        },
      },
      this.fieldManager,
    );
  }

  /** Renews the host's Lease; the fabric monitor reads it. No status write per beat. */
  private async heartbeat(signal: AbortSignal): Promise<void> {
    const namespace = this.options.leaseNamespace ?? "stratus-system";
    const name = `host-${this.hostName}`;
    const leaseDurationSeconds = this.options.leaseDurationSeconds ?? 20;
    while (!signal.aborted) {
      try {
        const now = kubeMicroTime();
        try {
          const lease = await this.client.get<Lease>(LEASE, name, namespace);
          await this.client.replace<Lease>(LEASE, {
            ...lease,
            spec: { ...lease.spec, holderIdentity: this.hostName, leaseDurationSeconds, renewTime: now },
          });
        } catch (error) {
          if (!isNotFound(error)) throw error;
          await this.client.create<Lease>(LEASE, {
            metadata: { name, namespace, labels: { "stratus.io/host": this.hostName } },
            spec: { holderIdentity: this.hostName, leaseDurationSeconds, acquireTime: now, renewTime: now },
          });
        }
      } catch (error) {
        if (!isConflict(error)) this.log.warn({ err: String(error) }, "heartbeat failed");
      }
      await this.watchLibvirt();
      await sleep(this.options.heartbeatIntervalMs ?? 5_000, signal);
    }
  }

  /**
   * A daemon that went away produces no domain event, so each beat looks: on a change either way
   * every bound VM is re-queued (and reports HypervisorError, or recovers once reconnected).
   */
  private async watchLibvirt(): Promise<void> {
    let reachable = this.libvirt.isAlive();
    if (!reachable)
      reachable = await this.libvirt.ensureConnected().then(
        () => true,
        () => false,
      );
    if (reachable === this.libvirtReachable) return;
    this.libvirtReachable = reachable;
    if (reachable) this.log.info("the libvirt daemon answers again");
    else this.log.warn("lost the libvirt daemon");
    for (const vm of this.boundVms()) this.controller.queue.add(objectKey(vm));
  }

  /** Stratus domains whose VM is gone or bound elsewhere are removed; other domains are never touched. */
  private async removeOrphans(): Promise<void> {
    await this.removeUnusedNetworks();
    const bound = new Set(this.boundVms().map((vm) => vm.metadata.uid));
    for (const domain of await this.libvirt.listDomains()) {
      const uid = vmUidOf(domain.name);
      if (!uid || bound.has(uid)) continue;
      this.log.info({ domain: domain.name }, "removing a leftover domain whose VM is not bound here");
      await this.deleteDomain(domain.name);
    }
  }

  private async deleteDomain(name: string): Promise<void> {
    const domain = await this.libvirt.domain(name);
    if (!domain) return;
    if (domain.state !== "shutoff") await this.libvirt.destroyDomain(name);
    await this.libvirt.undefineDomain(name);
  }

  /**
   * A libvirt failure (the daemon down or restarting, a call refused) is reported on the VM and
   * retried with backoff; the connection is reopened once the daemon answers again.
   */
  private async reconcileVm(key: string, log: Logger) {
    try {
      await this.libvirt.ensureConnected();
      return await this.syncVm(key, log);
    } catch (error) {
      const vm = this.placed.get(key);
      if (error instanceof LibvirtError && vm && this.isBound(vm) && !vm.metadata.deletionTimestamp) {
        await this.reportProblem(
          vm,
          new HostProblem("HypervisorError", `${error.message} (host ${this.hostName})`),
          "Unknown",
        ).catch(() => undefined);
      }
      throw error;
    }
  }

  private async syncVm(key: string, log: Logger) {
    const vm = this.placed.get(key);
    if (!vm || !this.isBound(vm)) {
      // Unbound from this host (moved, or gone): its domain and local root disk, if any, must go.
      const uid = [...this.keysByUid].find(([, k]) => k === key)?.[0];
      if (uid) {
        await this.deleteDomain(domainName(uid));
        await this.disks.deleteRootDisk(uid);
        this.keysByUid.delete(uid);
      }
      await this.removeUnusedNetworks();
      return;
    }
    const name = domainName(vm.metadata.uid as string);
    if (vm.metadata.deletionTimestamp) {
      await this.deleteDomain(name);
      await this.disks.deleteRootDisk(vm.metadata.uid as string);
      await this.detachVolumes(vm).catch((error: unknown) => {
        if (!isNotFound(error)) throw error; // the volume went first: nothing to detach
      });
      // Networks no VM here uses any more go; on the others its DHCP reservations go.
      await this.removeUnusedNetworks();
      for (const nic of vm.spec.nics ?? []) {
        const network = this.networks.get(`${vm.metadata.namespace}/${nic.network}`);
        if (network) await this.realizeNetwork(network, { createIfMissing: false });
      }
      if (await removeFinalizer(this.client, Resources.virtualMachines, vm, this.finalizer))
        log.info("domain deleted; finalizer removed");
      return;
    }
    // Maintenance: every VM here stops (gracefully, as for Halted), then goes back to the scheduler.
    if (this.inMaintenance()) return this.evacuate(vm, log);
    if (await addFinalizer(this.client, Resources.virtualMachines, vm, this.finalizer)) return; // the update re-queues it

    const offering = this.offerings.get(vm.spec.serviceOffering);
    if (!offering) {
      await this.reportProblem(
        vm,
        new HostProblem(
          "ServiceOfferingNotFound",
          `ServiceOffering "${vm.spec.serviceOffering}" does not exist.`,
        ),
      );
      return;
    }
    // The root disk is the VM's ROOT Volume (the compute controller creates it): wait for it, so
    // the VM never runs with a disk no Volume accounts for.
    const template = this.templates.get(vm.spec.template);
    const root = this.volumes.get(`${vm.metadata.namespace}/${rootVolumeName(vm.metadata.name as string)}`);
    if (
      template &&
      needsRootVolume(vm, template) &&
      !root?.metadata.ownerReferences?.some((o) => o.uid === vm.metadata.uid)
    ) {
      await this.reportProblem(vm, new Waiting("WaitingForVolume", "The root volume is not created yet."));
      return;
    }
    const running = (await this.libvirt.domain(name))?.state === "running";
    let disks: VmDisks;
    try {
      disks = await this.disks.ensureDisks(
        vm,
        {
          template: (n) => this.templates.get(n),
          volume: (namespace, n) => this.volumes.get(`${namespace}/${n}`),
          diskOffering: (n) => this.diskOfferings.get(n),
        },
        !running,
      );
    } catch (error) {
      if (!(error instanceof HostProblem)) throw error;
      await this.reportProblem(vm, error);
      return;
    }
    for (const attached of disks.dataVolumes) {
      await addFinalizer(this.client, Resources.volumes, attached.volume, this.finalizer);
    }
    let nics: ResolvedNic[];
    try {
      nics = this.resolveNics(vm);
      for (const network of new Set(nics.map((n) => n.network))) await this.realizeNetwork(network);
    } catch (error) {
      if (!(error instanceof HostProblem)) throw error;
      await this.reportProblem(vm, error);
      return;
    }
    let domain = await this.libvirt.domain(name);
    if (domain?.state === "shutoff") {
      // A stopped domain whose disks changed is simply defined again (any driver can do that).
      const defined = new Set(disksIn(await this.libvirt.domainXml(name)).map((d) => d.path));
      const wanted = disks.disks.map((d) => d.path);
      if (defined.size !== wanted.length || wanted.some((path) => !defined.has(path))) {
        await this.libvirt.undefineDomain(name);
        domain = undefined;
        log.info("redefining the stopped domain with its new disks");
      }
    }
    if (domain) {
      try {
        await this.syncDisks(vm, domain, disks, log);
      } catch (error) {
        if (!(error instanceof HostProblem)) throw error;
        await this.reportProblem(vm, error);
        return;
      }
    } else {
      domain = await this.libvirt.defineDomain(
        buildDomainXml({
          vm: {
            namespace: vm.metadata.namespace as string,
            name: vm.metadata.name as string,
            uid: vm.metadata.uid as string,
          },
          type: this.hypervisorType === "TEST" ? "test" : "qemu",
          vcpus: offering.spec.cpu,
          memoryBytes: parseQuantity(offering.spec.memory),
          disks: disks.disks,
          ...(disks.directBoot ? { directBoot: disks.directBoot } : {}),
          consoleSocket: this.consoleSocket(vm.metadata.uid as string),
          nics: nics.map((nic) => ({
            mac: nic.mac,
            network: libvirtNetworkName(nic.network.metadata.uid as string),
          })),
        }),
      );
      log.info({ domain: name }, "domain defined");
    }

    const intent = runIntent(vm, domain);
    let requeueAfterMs: number | undefined;
    if (intent === "run" && domain.state !== "running") {
      this.shutdownRequested.delete(key);
      await this.libvirt.startDomain(name);
      await this.events.record(Resources.virtualMachines, vm, {
        type: "Normal",
        reason: "Started",
        action: "Start",
        note: `Started on ${this.hostName}.`,
      });
    } else if (intent === "stop" && domain.state !== "shutoff") {
      if (!(await this.stopGracefully(vm, name))) requeueAfterMs = 2_000;
    }
    if (intent !== "stop") this.shutdownRequested.delete(key);
    const restartRequest = vm.metadata.annotations?.[RESTART_ANNOTATION];
    const restartPending = restartRequest !== undefined && restartRequest !== vm.status?.restartedAt;
    if (restartPending && intent === "run" && (await this.libvirt.domain(name))?.state === "running") {
      // A hard restart: the guest may ignore ACPI, and a reboot request must not hang on it.
      await this.libvirt.destroyDomain(name);
      await this.libvirt.startDomain(name);
      log.info({ requestedAt: restartRequest }, "restarted");
      await this.events.record(Resources.virtualMachines, vm, {
        type: "Normal",
        reason: "Restarted",
        action: "Restart",
        note: `Restarted on ${this.hostName}.`,
      });
    }
    const observed = await this.libvirt.domain(name);
    const status = {
      ...desiredVmStatus(vm, this.hostName, observed),
      // Always stated once known: a field this writer stops applying would be removed.
      ...(restartPending
        ? { restartedAt: restartRequest }
        : vm.status?.restartedAt
          ? { restartedAt: vm.status.restartedAt }
          : {}),
      nics: nics.map((nic) => ({
        name: nic.name,
        network: nic.network.metadata.name as string,
        macAddress: nic.mac,
        ...(nic.ip ? { ipAddress: nic.ip } : {}),
      })),
    };
    await applyStatus(this.client, Resources.virtualMachines, vm, status, this.fieldManager);
    for (const attached of disks.dataVolumes) await this.reportVolume(attached, vm);
    await this.detachVolumes(vm, new Set((vm.spec.dataVolumes ?? []).map((slot) => slot.volume)));
    if (disks.root) await this.reportRootVolume(vm, disks.root);
    return requeueAfterMs === undefined ? undefined : { requeueAfterMs };
  }

  /**
   * Hot plug: the domain's file disks follow the VM spec. A new data volume is attached (to the
   * running guest too), a removed one detached; a grown volume grows in the running guest. Device
   * names are taken from the domain, so reported devices are what the guest sees.
   */
  private async syncDisks(
    vm: VirtualMachine,
    domain: DomainInfo,
    disks: VmDisks,
    log: Logger,
  ): Promise<void> {
    const live = domain.state === "running";
    const current = disksIn(await this.libvirt.domainXml(domain.name));
    const wanted = new Set(disks.disks.map((d) => d.path));
    for (const disk of current) {
      if (wanted.has(disk.path) || !basename(disk.path).startsWith(DATA_VOLUME_PREFIX)) continue;
      await this.changeDevices(
        domain.name,
        "detach",
        diskXml({ path: disk.path, format: "qcow2", serial: "" }, disk.target),
        live,
      );
      log.info({ path: disk.path, device: disk.target }, "detached a volume");
    }
    const used = new Set(current.filter((d) => wanted.has(d.path)).map((d) => d.target));
    for (const disk of disks.disks) {
      const attached = current.find((d) => d.path === disk.path);
      if (attached) continue;
      let index = 0;
      while (used.has(diskTarget(index))) index++;
      const target = diskTarget(index);
      used.add(target);
      await this.changeDevices(domain.name, "attach", diskXml(disk, target), live);
      log.info({ path: disk.path, device: target, live }, "attached a volume");
      await this.events.record(Resources.virtualMachines, vm, {
        type: "Normal",
        reason: "VolumeAttached",
        action: "Attach",
        note: `Disk ${disk.serial} attached as ${target}${live ? " to the running guest" : ""}.`,
      });
    }
    const targets = new Map(
      disksIn(await this.libvirt.domainXml(domain.name)).map((d) => [d.path, d.target]),
    );
    for (const attached of disks.dataVolumes) {
      attached.device = targets.get(attached.info.path) ?? attached.device;
      const desired = attached.desiredBytes ?? attached.info.capacityBytes;
      if (!live || desired <= attached.info.capacityBytes) continue;
      if ((await this.libvirt.blockCapacity(domain.name, attached.device)) < desired) {
        await this.libvirt.resizeBlockDevice(domain.name, attached.device, desired);
        log.info({ device: attached.device, bytes: String(desired) }, "grew a volume in the running guest");
      }
      attached.info = { ...attached.info, capacityBytes: desired };
    }
  }

  /** Attaches or detaches a device; a driver that cannot hot plug (the test driver) says so. */
  private async changeDevices(domain: string, change: "attach" | "detach", xml: string, live: boolean) {
    try {
      if (change === "attach") await this.libvirt.attachDevice(domain, xml, live);
      else await this.libvirt.detachDevice(domain, xml, live);
    } catch (error) {
      if (error instanceof LibvirtError && error.code === VIR_ERR_NO_SUPPORT)
        throw new HostProblem(
          "HotPlugUnsupported",
          `The hypervisor of host ${this.hostName} cannot ${change} disks; stop and start the VM to apply the change.`,
        );
      throw error;
    }
  }

  /**
   * ACPI shutdown, then destroy once the grace period is over. Returns true when the domain is off
   * (false: look again soon).
   */
  private async stopGracefully(vm: VirtualMachine, name: string): Promise<boolean> {
    const key = objectKey(vm);
    const domain = await this.libvirt.domain(name);
    if (!domain || domain.state === "shutoff") {
      if (domain && this.shutdownRequested.delete(key))
        await this.events.record(Resources.virtualMachines, vm, {
          type: "Normal",
          reason: "Stopped",
          action: "Stop",
          note: `Stopped on ${this.hostName}.`,
        });
      return true;
    }
    const requestedAt = this.shutdownRequested.get(key);
    if (requestedAt === undefined) {
      this.shutdownRequested.set(key, Date.now());
      await this.libvirt.shutdownDomain(name);
    } else if (Date.now() - requestedAt > (this.options.shutdownGraceMs ?? 60_000)) {
      await this.libvirt.destroyDomain(name);
      await this.events.record(Resources.virtualMachines, vm, {
        type: "Warning",
        reason: "ForcedOff",
        action: "Stop",
        note: "The guest ignored the shutdown request; the domain was destroyed.",
      });
    }
    // The shutdown may already have taken effect (the test driver's is immediate).
    return (await this.libvirt.domain(name))?.state === "shutoff" && this.stopGracefully(vm, name);
  }

  /**
   * Maintenance: the VM stops gracefully, its domain and local root disk go, this host lets go of
   * it (finalizer) and unbinds it (guarded by its resourceVersion), so the scheduler places it on
   * another host. Killed anywhere in between, the next run picks up where this one stopped.
   */
  private async evacuate(vm: VirtualMachine, log: Logger) {
    const uid = vm.metadata.uid as string;
    if (!(await this.stopGracefully(vm, domainName(uid)))) return { requeueAfterMs: 2_000 };
    await this.deleteDomain(domainName(uid));
    await this.disks.deleteRootDisk(uid);
    await this.detachVolumes(vm);
    await removeFinalizer(this.client, Resources.virtualMachines, vm, this.finalizer);
    const current = await this.client.get<VirtualMachine>(
      Resources.virtualMachines,
      vm.metadata.name as string,
      vm.metadata.namespace,
    );
    if (current.status?.host !== this.hostName) return undefined;
    await this.client.mergePatch(
      Resources.virtualMachines,
      vm.metadata.name as string,
      vm.metadata.namespace,
      { metadata: { resourceVersion: current.metadata.resourceVersion }, status: { host: null } },
      "status",
    );
    log.info("stopped for maintenance; handed back to the scheduler");
    await this.events.record(Resources.virtualMachines, vm, {
      type: "Normal",
      reason: "Evacuated",
      action: "Stop",
      note: `Stopped on ${this.hostName} for maintenance; it starts again on another host.`,
    });
  }

  /** The ROOT Volume the compute controller made for the VM shows the disk this host created. */
  private async reportRootVolume(vm: VirtualMachine, root: VolumeInfo): Promise<void> {
    const volume = this.volumes.get(`${vm.metadata.namespace}/${rootVolumeName(vm.metadata.name as string)}`);
    if (!volume?.metadata.ownerReferences?.some((o) => o.uid === vm.metadata.uid)) return;
    await this.reportVolume({ volume, info: root, device: "vda" }, vm);
  }

  /** The console socket of a VM placed on this host (for the console relay), or undefined. */
  consoleSocketOf(vmUid: string): string | undefined {
    return this.boundVms().some((vm) => vm.metadata.uid === vmUid) ? this.consoleSocket(vmUid) : undefined;
  }

  /** The unix socket QEMU serves the VM's serial console on (the console relay reads it). */
  consoleSocket(vmUid: string): string {
    return join(this.options.consoleDir ?? `/run/stratus/console/${this.hostName}`, `${vmUid}.sock`);
  }

  /** Each NIC with its network, MAC and address (its IPAddress object, else the static address). */
  private resolveNics(vm: VirtualMachine): ResolvedNic[] {
    const namespace = vm.metadata.namespace as string;
    const allocated = this.addresses.byIndex("vm", objectKey(vm));
    return (vm.spec.nics ?? []).map((nic, index) => {
      const network = this.networks.get(`${namespace}/${nic.network}`);
      if (!network)
        throw new HostProblem(
          "NetworkNotFound",
          `Network "${nic.network}" does not exist in namespace ${namespace}.`,
        );
      const ip = allocated.find((a) => a.spec.nic === nic.name && a.spec.network === nic.network)?.spec
        .address;
      // The network controller allocates (creates the IPAddress); DHCP must know the address first.
      if (network.spec.cidr && !ip)
        throw new Waiting("WaitingForAddress", `NIC ${nic.name} has no address on ${nic.network} yet.`);
      return {
        name: nic.name,
        network,
        mac: nic.macAddress ?? macFor(vm.metadata.uid as string, index),
        ...(ip ? { ip } : {}),
        vm: vm.metadata.name as string,
      };
    });
  }

  /** The network's bridge and DHCP, with one reservation per NIC of this host's VMs on it. */
  private async realizeNetwork(
    network: Network,
    options: { createIfMissing: boolean } = { createIfMissing: true },
  ): Promise<void> {
    const name = libvirtNetworkName(network.metadata.uid as string);
    if (!options.createIfMissing && (await this.libvirt.networkXml(name)) === undefined) return;
    const desired: DhcpHost[] = this.boundVms()
      .filter((vm) => !vm.metadata.deletionTimestamp && vm.metadata.namespace === network.metadata.namespace)
      .flatMap((vm) => {
        try {
          return this.resolveNics(vm);
        } catch (error) {
          if (error instanceof HostProblem) return []; // that VM reports it itself
          throw error;
        }
      })
      .filter((nic) => nic.network.metadata.uid === network.metadata.uid && nic.ip)
      .map((nic) => ({ mac: nic.mac, ip: nic.ip as string, name: nic.vm }));
    await this.libvirt.ensureNetwork(name, buildNetworkXml(network, desired));
    const vlan = network.status?.vlan ?? network.spec.vlan;
    if (this.options.vlanUplink && vlan !== undefined) {
      const uid = network.metadata.uid as string;
      await ensureVlanLink({
        uplink: this.options.vlanUplink,
        vlan,
        name: vlanLinkName(uid),
        bridge: bridgeName(uid),
      });
    }
    if (!network.spec.cidr || network.spec.dhcp === false) return;
    const current = dhcpHostsIn((await this.libvirt.networkXml(name)) ?? "");
    const same = (a: DhcpHost, b: DhcpHost) => a.mac === b.mac && a.ip === b.ip;
    for (const stale of current.filter((c) => !desired.some((d) => same(c, d))))
      await this.libvirt.updateDhcpHost(name, "delete", dhcpHostXml(stale));
    for (const missing of desired.filter((d) => !current.some((c) => same(c, d))))
      await this.libvirt.updateDhcpHost(name, "add", dhcpHostXml(missing));
  }

  /** Stratus networks no VM on this host uses any more are torn down. */
  private async removeUnusedNetworks(): Promise<void> {
    const used = new Set(
      this.boundVms()
        .filter((vm) => !vm.metadata.deletionTimestamp)
        .flatMap((vm) =>
          (vm.spec.nics ?? []).map(
            (nic) => this.networks.get(`${vm.metadata.namespace}/${nic.network}`)?.metadata.uid,
          ),
        ),
    );
    const present = await this.libvirt.listNetworks();
    for (const name of present) {
      if (name.startsWith(NETWORK_PREFIX) && !used.has(name.slice(NETWORK_PREFIX.length))) {
        await this.libvirt.deleteNetwork(name);
        this.log.info({ network: name }, "removed a network no VM here uses");
      }
    }
    if (this.options.vlanUplink) {
      const keep = new Set([...used].filter((uid) => uid !== undefined).map((uid) => vlanLinkName(uid)));
      for (const link of await removeVlanLinks(keep))
        this.log.info({ link }, "removed a VLAN link no network uses");
    }
  }

  private async reportVolume(attached: AttachedVolume, vm: VirtualMachine | undefined): Promise<void> {
    const { volume, info, device } = attached;
    await applyStatus(
      this.client,
      Resources.volumes,
      volume,
      {
        observedGeneration: volume.metadata.generation ?? 0,
        phase: vm ? "Attached" : "Ready",
        host: this.hostName,
        pool: STORAGE_POOL,
        path: info.path,
        capacity: formatQuantity(info.capacityBytes),
        ...(vm ? { attachedTo: { virtualMachine: vm.metadata.name as string, device } } : {}),
      },
      this.fieldManager,
    );
  }

  /** Volumes that say they are attached to the VM but are no longer in its spec (or its VM is gone) are detached (Ready). */
  private async detachVolumes(vm: VirtualMachine, keep: ReadonlySet<string> = new Set()): Promise<void> {
    const volumes = this.volumes
      .list()
      .filter(
        (v) =>
          v.metadata.namespace === vm.metadata.namespace &&
          v.status?.attachedTo?.virtualMachine === vm.metadata.name &&
          v.spec.type !== "ROOT" &&
          !keep.has(v.metadata.name as string),
      );
    for (const volume of volumes) {
      const info = { name: "", path: volume.status?.path ?? "", capacityBytes: BigInt(0) };
      const current = await this.libvirt.volume(STORAGE_POOL, dataVolumeName(volume.metadata.uid as string));
      await this.reportVolume({ volume, info: current ?? info, device: "" }, undefined);
    }
  }

  /**
   * A Volume's disk here is removed once the Volume is deleted, or bound to another host (its VM
   * moved), and no VM on this host uses it any more.
   */
  private async reconcileVolumeDeletion(key: string, log: Logger) {
    const volume = this.volumes.get(key);
    if (!volume?.metadata.finalizers?.includes(this.finalizer)) return;
    const movedAway = volume.status?.host !== undefined && volume.status.host !== this.hostName;
    if (!volume.metadata.deletionTimestamp && !movedAway) return;
    const users = this.boundVms().filter((vm) => attaches(vm, volume));
    if (users.length > 0) {
      log.info({ users: users.map(objectKey) }, "volume still attached; keeping its disk");
      return { requeueAfterMs: 10_000 };
    }
    await this.disks.deleteDataVolume(volume.metadata.uid as string);
    await removeFinalizer(this.client, Resources.volumes, volume, this.finalizer);
    log.info({ movedTo: movedAway ? volume.status?.host : undefined }, "volume disk deleted");
    return undefined;
  }

  /** A problem ends as the VM's Ready condition (and a Warning); while waiting the VM is Starting. */
  private async reportProblem(
    vm: VirtualMachine,
    problem: HostProblem,
    state: "Error" | "Unknown" = "Error",
  ): Promise<void> {
    const { reason, message } = problem;
    const status = desiredVmStatus(vm, this.hostName, undefined);
    status.conditions = status.conditions.map((c) => (c.type === "Ready" ? { ...c, reason, message } : c));
    const waiting = problem instanceof Waiting;
    const wrote = await applyStatus(
      this.client,
      Resources.virtualMachines,
      vm,
      // Placed here and being prepared (volumes, addresses): CloudStack calls that Starting.
      { ...status, state: waiting ? "Starting" : state },
      this.fieldManager,
    );
    if (wrote && !waiting)
      await this.events.record(Resources.virtualMachines, vm, {
        type: "Warning",
        reason,
        action: "Define",
        note: message,
      });
  }
}

function attaches(vm: VirtualMachine, volume: Volume): boolean {
  return (
    vm.metadata.namespace === volume.metadata.namespace &&
    (vm.spec.dataVolumes ?? []).some((d) => d.volume === volume.metadata.name)
  );
}

function volumeKeys(vm: VirtualMachine): string[] {
  return (vm.spec.dataVolumes ?? []).map((slot) => `${vm.metadata.namespace}/${slot.volume}`);
}

interface ResolvedNic {
  name: string;
  network: Network;
  mac: string;
  ip?: string;
  vm: string;
}

// The host agent: registers its Host, renews its heartbeat Lease, and turns the VMs bound to its
// host into libvirt domains, reporting what really runs. It watches only VMs bound to it (placed
// there, or pinned there while not placed) plus libvirt's own lifecycle events, both feeding one
// work queue, like KubeVirt's virt-handler.
import type { Logger } from "pino";
import { type Host, Resources, type ServiceOffering, type VirtualMachine } from "../crds/index.ts";
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
import { buildDomainXml, domainName, vmUidOf } from "./domain-xml.ts";
import type { LibvirtConnection } from "./libvirt/connection.ts";
import { desiredVmStatus, runIntent } from "./vm-status.ts";

export const AGENT_FINALIZER = "stratus.io/host-agent";
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
}

export class HostAgent {
  readonly hostName: string;
  private readonly options: HostAgentOptions;
  private readonly client: KubeClient;
  private readonly libvirt: LibvirtConnection;
  private readonly log: Logger;
  private readonly fieldManager: string;
  private readonly informers: InformerFactory;
  private readonly placed: Informer<VirtualMachine>;
  private readonly pinned: Informer<VirtualMachine>;
  private readonly offerings: Informer<ServiceOffering>;
  private readonly controller: Controller;
  private readonly events: EventRecorder;
  /** VM UID -> key, so libvirt events (which name domains by UID) find their VM. */
  private readonly keysByUid = new Map<string, string>();
  private readonly shutdownRequested = new Map<string, number>();
  private hypervisorType = "TEST";

  constructor(options: HostAgentOptions) {
    this.options = options;
    this.hostName = options.hostName;
    this.client = options.client;
    this.libvirt = options.libvirt;
    this.log = options.logger;
    this.fieldManager = `stratus-host-agent/${options.hostName}`;
    this.informers = new InformerFactory(this.client, {
      logger: this.log,
      metrics: options.metrics,
      resyncPeriodMs: options.resyncPeriodMs ?? 60_000,
    });
    this.placed = this.informers.for<VirtualMachine>(Resources.virtualMachines, {
      fieldSelector: `status.host=${this.hostName}`,
    });
    this.pinned = this.informers.for<VirtualMachine>(Resources.virtualMachines, {
      fieldSelector: `spec.placement.host=${this.hostName}`,
    });
    this.offerings = this.informers.for<ServiceOffering>(Resources.serviceOfferings);
    this.events = new EventRecorder(this.client, "stratus.io/host-agent", this.hostName, this.log);
    this.controller = new Controller({
      name: "host-agent-vm",
      logger: this.log,
      metrics: options.metrics,
      reconcile: (key, log) => this.reconcileVm(key, log),
    })
      .watch(this.placed)
      .watch(this.pinned)
      // An offering that appears or changes may unblock VMs waiting for it.
      .watch(this.offerings, (offering) =>
        this.boundVms()
          .filter((vm) => vm.spec.serviceOffering === offering.metadata.name)
          .map(objectKey),
      );
    for (const informer of [this.placed, this.pinned]) {
      informer.addHandlers({
        onAdd: (vm) => this.keysByUid.set(vm.metadata.uid as string, objectKey(vm)),
        onUpdate: (_, vm) => this.keysByUid.set(vm.metadata.uid as string, objectKey(vm)),
      });
    }
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    await this.register();
    this.libvirt.onDomainEvent((name, event) => {
      const uid = vmUidOf(name);
      const key = uid ? this.keysByUid.get(uid) : undefined;
      this.log.debug({ domain: name, event, key }, "libvirt event");
      if (key) this.controller.queue.add(key);
    });
    this.informers.start();
    await this.informers.waitForSync();
    await this.removeOrphans();
    await Promise.all([this.controller.run(signal), this.heartbeat(signal)]);
    await this.informers.stop();
  }

  isSynced(): boolean {
    return this.informers.unsynced().length === 0;
  }

  private boundVms(): VirtualMachine[] {
    const byKey = new Map<string, VirtualMachine>();
    for (const vm of [...this.pinned.list(), ...this.placed.list()]) byKey.set(objectKey(vm), vm);
    return [...byKey.values()].filter((vm) => this.isBound(vm));
  }

  private isBound(vm: VirtualMachine): boolean {
    const placedOn = vm.status?.host;
    return placedOn ? placedOn === this.hostName : vm.spec.placement?.host === this.hostName;
  }

  /** Creates the Host (the zone is the administrator's once it exists) and reports its facts. */
  private async register(): Promise<void> {
    const [node, versions] = await Promise.all([this.libvirt.nodeInfo(), this.libvirt.versions()]);
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
        capacity: { cpu: node.cpus, memory: formatQuantity(BigInt(node.memoryBytes)) },
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
      await sleep(this.options.heartbeatIntervalMs ?? 5_000, signal);
    }
  }

  /** Stratus domains whose VM is gone or bound elsewhere are removed; other domains are never touched. */
  private async removeOrphans(): Promise<void> {
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

  private async reconcileVm(key: string, log: Logger) {
    const vm = this.placed.get(key) ?? this.pinned.get(key);
    if (!vm || !this.isBound(vm)) {
      // Unbound from this host (or gone): its domain, if any, must go.
      const uid = [...this.keysByUid].find(([, k]) => k === key)?.[0];
      if (uid) {
        await this.deleteDomain(domainName(uid));
        this.keysByUid.delete(uid);
      }
      return;
    }
    const name = domainName(vm.metadata.uid as string);
    if (vm.metadata.deletionTimestamp) {
      await this.deleteDomain(name);
      if (await removeFinalizer(this.client, Resources.virtualMachines, vm, AGENT_FINALIZER))
        log.info("domain deleted; finalizer removed");
      return;
    }
    if (await addFinalizer(this.client, Resources.virtualMachines, vm, AGENT_FINALIZER)) return; // the update re-queues it

    const offering = this.offerings.get(vm.spec.serviceOffering);
    if (!offering) {
      await this.reportProblem(
        vm,
        "ServiceOfferingNotFound",
        `ServiceOffering "${vm.spec.serviceOffering}" does not exist.`,
      );
      return;
    }
    let domain = await this.libvirt.domain(name);
    if (!domain) {
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
          disks: [],
          nics: [],
        }),
      );
      log.info({ domain: name }, "domain defined");
    }

    const intent = runIntent(vm);
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
      const requestedAt = this.shutdownRequested.get(key);
      if (requestedAt === undefined) {
        this.shutdownRequested.set(key, Date.now());
        await this.libvirt.shutdownDomain(name);
        requeueAfterMs = 2_000;
      } else if (Date.now() - requestedAt > (this.options.shutdownGraceMs ?? 60_000)) {
        await this.libvirt.destroyDomain(name);
        await this.events.record(Resources.virtualMachines, vm, {
          type: "Warning",
          reason: "ForcedOff",
          action: "Stop",
          note: "The guest ignored the shutdown request; the domain was destroyed.",
        });
      } else {
        requeueAfterMs = 2_000;
      }
    }
    if (intent !== "stop") this.shutdownRequested.delete(key);
    const observed = await this.libvirt.domain(name);
    if (observed?.state === "shutoff" && intent === "stop" && this.shutdownRequested.delete(key)) {
      await this.events.record(Resources.virtualMachines, vm, {
        type: "Normal",
        reason: "Stopped",
        action: "Stop",
        note: `Stopped on ${this.hostName}.`,
      });
    }
    const status = {
      ...desiredVmStatus(vm, this.hostName, observed),
      // Until a scheduler places it, a pinned VM's host is where the agent runs it.
      ...(vm.status?.host ? {} : { host: this.hostName }),
    };
    await applyStatus(this.client, Resources.virtualMachines, vm, status, this.fieldManager);
    return requeueAfterMs === undefined ? undefined : { requeueAfterMs };
  }

  private async reportProblem(vm: VirtualMachine, reason: string, message: string): Promise<void> {
    const status = desiredVmStatus(vm, this.hostName, undefined);
    status.conditions = status.conditions.map((c) => (c.type === "Ready" ? { ...c, reason, message } : c));
    await applyStatus(
      this.client,
      Resources.virtualMachines,
      vm,
      { ...status, state: "Error" },
      this.fieldManager,
    );
    await this.events.record(Resources.virtualMachines, vm, {
      type: "Warning",
      reason,
      action: "Define",
      note: message,
    });
  }
}

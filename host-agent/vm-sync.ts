// The host agent's reconcile loop for one VM: plan (planner.ts), then make the hypervisor match
// and report what it runs. A start costs two writes: the VM's status once the domain runs, and the
// root Volume's status. Everything goes through the Hypervisor seam and the AgentWrites interface,
// so the loop is unit-tested against the in-memory fakes.
import type { Logger } from "pino";
import { DOMAIN_FINALIZER } from "../crds/finalizers.ts";
import {
  awaitingFailoverRestart,
  type DiskOffering,
  isReleasedByFailover,
  type Network,
  type PoolType,
  Resources,
  rootVolumeName,
  type ServiceOffering,
  type Template,
  type VirtualMachine,
  type Volume,
  type VolumeSnapshot,
} from "../crds/index.ts";
import type { AgentWrites } from "./agent-writes.ts";
import { removeConfigDrive } from "./config-drive.ts";
import { FILE_IMAGES, growLiveDisks, type ImageStore, prepareDisks } from "./disk-prep.ts";
import { configDrivePath, type GuestDataSource, prepareConfigDrive } from "./guest-data.ts";
import type { Hypervisor, ObservedDomain, Owner } from "./hypervisor.ts";
import type { MigrationHooks } from "./migration-sync.ts";
import { syncHostNetworks } from "./network-sync.ts";
import {
  type AgentStorage,
  discPath,
  diskChanges,
  planVm,
  type RunPlan,
  reservationsFor,
  rootDiskName,
} from "./planner.ts";
import { HostProblem, Waiting } from "./problem.ts";
import { NO_SNAPSHOT_STORE, type SnapshotAccess } from "./snapshot-sync.ts";
import { desiredVmStatus } from "./vm-status.ts";
import { VolumeReports } from "./volume-reports.ts";

/** What the agent knows from the API server (informer caches, or maps in tests). */
export interface VmWorld {
  vm(key: string): VirtualMachine | undefined;
  /** The VMs bound to this host. */
  boundVms(): VirtualMachine[];
  offering(name: string): ServiceOffering | undefined;
  template(name: string): Template | undefined;
  diskOffering(name: string): DiskOffering | undefined;
  inMaintenance(): boolean;
  /** Whether the namespace's account has a primary-storage limit. */
  storageLimited(namespace: string): boolean;
  /** The host's zone and where its secondary storage is mounted (if it has one). */
  zone(): { name: string; secondaryPath?: string };
  /** The data and root Volumes the VM names (cached, or read once when not on this host yet). */
  volumes(vm: VirtualMachine): Promise<Map<string, Volume>>;
  networks(vm: VirtualMachine): Promise<Map<string, Network>>;
  /** The networks whose router runs on this host (their bridges stay without guests). */
  routedNetworks?(): Network[];
  /** A VolumeSnapshot of a namespace (a new disk made from it copies its file). */
  snapshot(namespace: string, name: string): Promise<VolumeSnapshot | undefined>;
}

export interface VmSyncOptions {
  owner: Owner;
  hypervisor: Hypervisor;
  world: VmWorld;
  writes: AgentWrites;
  domainType: () => "kvm" | "qemu" | "test";
  /** The pools this agent reaches (pool-sync.ts keeps them). */
  storage: AgentStorage & { typeOf(pool: string): PoolType | undefined };
  paths: { cache: string; consoleSocket: (vmUid: string) => string };
  shutdownGraceMs: number;
  /** Template images: fetched once into the cache, then checked (real files unless a test says otherwise). */
  images?: ImageStore;
  /** Host-side network plumbing beyond libvirt (VLAN links); optional. */
  afterNetworkSync?: (network: RunPlan["nics"][number]) => Promise<void>;
  /** The zones' S3-compatible stores, for a new disk made from a snapshot kept there. */
  snapshots?: SnapshotAccess;
  /** VM UIDs paused for a snapshot's copy right now (snapshot-sync.ts): not resumed by this loop. */
  pausedForCopy?: ReadonlySet<string>;
  /** Called with the bridge of each network this agent removed. */
  afterNetworkRemoved?: (bridge: string) => Promise<void>;
  /**
   * Asked before a guest starts: why it must not start here now (an HA VM this host may no longer
   * hold, see fencing.ts), or undefined. The guard logs its reason; the VM is looked at again.
   */
  mayStart?: (vm: VirtualMachine) => Promise<string | undefined>;
  /** Live migration (migration-sync.ts): VMs to leave alone, guests to adopt, maintenance's live moves. */
  migration?: MigrationHooks;
  /** User data, passwords and key pairs for config drives (guest-data.ts). */
  guestData?: GuestDataSource;
  now?: () => number;
}

/** A guest the start guard held back is looked at again after this long. */
const START_HELD_RETRY_MS = 1_000;

export interface SyncResult {
  requeueAfterMs?: number;
}

export class VmSync {
  private readonly o: VmSyncOptions;
  private readonly hv: Hypervisor;
  private readonly images: ImageStore;
  private readonly volumes: VolumeReports;
  /** When a graceful shutdown was asked for, per VM UID. */
  private readonly shutdownRequested = new Map<string, number>();

  constructor(options: VmSyncOptions) {
    this.o = options;
    this.hv = options.hypervisor;
    this.images = options.images ?? FILE_IMAGES;
    this.volumes = new VolumeReports({ ...options, hypervisor: options.hypervisor });
  }

  private get host(): string {
    return this.o.owner.host;
  }

  /** Reconciles the VM with this key; `knownUid` is its UID when the VM is gone from the cache. */
  async sync(key: string, knownUid: string | undefined, log: Logger): Promise<SyncResult | undefined> {
    const vm = this.o.world.vm(key);
    if (!vm || vm.status?.host !== this.host) {
      if (knownUid) await this.supersede(knownUid, log);
      await this.removeUnusedNetworks(log);
      return undefined;
    }
    const uid = vm.metadata.uid as string;
    // Its host was lost and the fabric let it go: it runs elsewhere next, never here meanwhile.
    if (isReleasedByFailover(vm)) {
      await this.supersede(uid, log);
      return undefined;
    }
    const held = this.o.migration?.holds(vm);
    if (held) {
      log.debug(held);
      return undefined;
    }
    let domain = await this.hv.observe(uid);
    if (domain && !this.owns(domain)) domain = (await this.o.migration?.adopt(vm, domain)) ?? domain;
    if (domain && !this.owns(domain)) {
      return this.report(
        vm,
        undefined,
        new HostProblem(
          "DomainOwnedElsewhere",
          `A domain for this VM on ${this.host} belongs to ${domain.owner ? `host ${domain.owner.host} of cluster ${domain.owner.cluster}` : "an unmarked agent"}; it is left alone.`,
        ),
      );
    }
    const [volumes, networks] = await Promise.all([this.o.world.volumes(vm), this.o.world.networks(vm)]);
    const plan = planVm({
      vm,
      host: this.host,
      owner: this.o.owner,
      domain,
      inMaintenance: this.o.world.inMaintenance(),
      domainType: this.o.domainType(),
      offering: this.o.world.offering(vm.spec.serviceOffering),
      template: this.o.world.template(vm.spec.template),
      iso: vm.spec.iso ? this.o.world.template(vm.spec.iso) : undefined,
      volume: (name) => volumes.get(name),
      diskOffering: (name) => this.o.world.diskOffering(name),
      network: (name) => networks.get(name),
      storage: this.o.storage,
      zone: this.o.world.zone(),
      paths: {
        cache: this.o.paths.cache,
        consoleSocket: this.o.paths.consoleSocket(uid),
      },
      storageLimited: this.o.world.storageLimited(vm.metadata.namespace as string),
    });
    switch (plan.kind) {
      case "release":
        await this.release(vm, domain, volumes, log);
        return undefined;
      case "evacuate":
        return this.evacuate(vm, domain, volumes, log);
      case "wait":
        log.debug({ reason: plan.reason }, plan.message);
        return plan.shown ? this.report(vm, domain, new Waiting(plan.reason, plan.message)) : undefined;
      case "problem":
        return this.report(vm, domain, plan.problem);
      case "power": {
        const requeue = domain ? await this.applyPower(vm, domain, plan.intent) : undefined;
        await this.report(vm, await this.hv.observe(uid));
        return requeue;
      }
      case "run":
        try {
          return await this.run(vm, domain, plan, volumes, log);
        } catch (error) {
          if (error instanceof HostProblem) return this.report(vm, await this.hv.observe(uid), error);
          throw error;
        }
    }
  }

  private owns(domain: ObservedDomain): boolean {
    return domain.owner?.cluster === this.o.owner.cluster && domain.owner.host === this.host;
  }

  private async run(
    vm: VirtualMachine,
    existing: ObservedDomain | undefined,
    plan: RunPlan,
    volumes: Map<string, Volume>,
    log: Logger,
  ): Promise<SyncResult | undefined> {
    const uid = vm.metadata.uid as string;
    const live = existing?.state === "running";
    const root = await prepareDisks(
      this.hv,
      this.images,
      this.host,
      vm,
      plan,
      !live,
      (namespace, name) => this.o.world.snapshot(namespace, name),
      this.o.snapshots ?? NO_SNAPSHOT_STORE,
    );
    // A guest reads its config drive at boot: it is (re)built only when the guest is about to start.
    const configDrive =
      live || plan.intent !== "run"
        ? existing?.configDrive
        : await prepareConfigDrive(vm, plan, {
            cacheDir: this.o.paths.cache,
            zone: this.o.world.zone().name,
            source: this.o.guestData,
          });
    const domainSpec = { ...plan.domain, ...(configDrive ? { configDrive } : {}) };
    for (const nic of plan.nics) {
      await this.hv.syncNetwork(nic.spec, reservationsFor(nic.network, this.o.world.boundVms()));
      await this.o.afterNetworkSync?.(nic);
    }
    let domain = existing;
    if (domain && plan.intent === "stop" && domain.state !== "shutoff") {
      // Stop first: a stopped domain takes disk changes by redefinition, which any driver can do.
      const stopping = await this.applyPower(vm, domain, "stop");
      domain = await this.hv.observe(uid);
      if (stopping) {
        await this.report(vm, domain);
        return stopping;
      }
    }
    if (domain) {
      const changes = diskChanges(domain, plan.domain.disks, configDrive, plan.iso?.path);
      if (changes.redefine) {
        log.info("redefining the stopped domain with its new disks");
        domain = await this.hv.define(domainSpec);
      }
      for (const { path, target } of changes.detach) {
        await this.hv.detachDisk(uid, path, target, live);
        log.info({ path, target }, "detached a volume");
      }
      for (const { disk, target } of changes.attach) {
        await this.hv.attachDisk(uid, disk, target, live);
        log.info({ path: disk.path, target, live }, "attached a volume");
      }
      if (changes.swapIso) {
        await this.hv.changeIso(uid, plan.iso?.path);
        log.info({ iso: vm.spec.iso ?? null }, plan.iso ? "put the ISO in the drive" : "ejected the ISO");
      }
    } else {
      domain = await this.hv.define(domainSpec);
      log.info("domain defined");
    }
    // Arrived after a failover: the state the lost host's agent wrote last goes before the start.
    if (awaitingFailoverRestart(vm) && vm.status?.state === "Running") await this.report(vm, domain);
    const requeue = await this.applyPower(vm, domain, plan.intent);
    let restartedAt = vm.status?.restartedAt;
    if (
      plan.restartRequest !== undefined &&
      plan.intent === "run" &&
      (await this.hv.observe(uid))?.state === "running"
    ) {
      // A hard restart: the guest may ignore ACPI, and a reboot request must not hang on it.
      const held = await this.o.mayStart?.(vm);
      if (held) return { requeueAfterMs: START_HELD_RETRY_MS };
      await this.hv.powerOff(uid);
      await this.hv.start(uid);
      restartedAt = plan.restartRequest;
      log.info({ requestedAt: restartedAt }, "restarted");
      await this.o.writes.event(Resources.virtualMachines, vm, {
        type: "Normal",
        reason: "Restarted",
        action: "Restart",
        note: `Restarted on ${this.host}.`,
      });
    }
    const observed = await this.hv.observe(uid);
    const targets = new Map((observed?.disks ?? []).map((d) => [d.path, d.target]));
    if (observed?.state === "running") await growLiveDisks(this.hv, uid, plan.dataDisks, targets, log);
    await this.report(vm, observed, undefined, restartedAt);
    await this.volumes.reportAttached(vm, plan, root, volumes, targets);
    await this.volumes.detachUnlisted(vm, volumes, new Set((vm.spec.dataVolumes ?? []).map((d) => d.volume)));
    return requeue;
  }

  /** Starts or stops the domain as the intent says. Returns a requeue while a shutdown is under way. */
  private async applyPower(
    vm: VirtualMachine,
    domain: ObservedDomain,
    intent: string,
  ): Promise<SyncResult | undefined> {
    const uid = vm.metadata.uid as string;
    if (intent === "run" && domain.state === "paused") {
      // Paused for a snapshot's copy: the copy resumes it. Paused otherwise, only by a snapshot an
      // earlier run of this agent did not live to finish: the guest goes on.
      if (!this.o.pausedForCopy?.has(uid)) await this.hv.resume(uid);
      return undefined;
    }
    if (intent === "run" && domain.state !== "running") {
      // A guest still shutting down is not started: once it is off, its shutoff reason decides
      // (RerunOnFailure leaves a guest that powered itself off alone).
      if (domain.state === "shutdown") return { requeueAfterMs: 1_000 };
      this.shutdownRequested.delete(uid);
      const held = await this.o.mayStart?.(vm);
      if (held) return { requeueAfterMs: START_HELD_RETRY_MS };
      await this.hv.start(uid);
      return undefined;
    }
    if (intent === "stop" && domain.state !== "shutoff")
      return (await this.stopGracefully(vm)) ? undefined : { requeueAfterMs: 2_000 };
    if (intent !== "stop") this.shutdownRequested.delete(uid);
    return undefined;
  }

  /** ACPI shutdown, then power off once the grace period is over. True once the domain is off. */
  private async stopGracefully(vm: VirtualMachine): Promise<boolean> {
    const uid = vm.metadata.uid as string;
    const now = this.o.now?.() ?? Date.now();
    let domain = await this.hv.observe(uid);
    if (!domain || domain.state === "shutoff") return true;
    const requestedAt = this.shutdownRequested.get(uid);
    if (requestedAt === undefined) {
      this.shutdownRequested.set(uid, now);
      await this.hv.requestShutdown(uid);
    } else if (now - requestedAt > this.o.shutdownGraceMs) {
      await this.hv.powerOff(uid);
      await this.o.writes.event(Resources.virtualMachines, vm, {
        type: "Warning",
        reason: "ForcedOff",
        action: "Stop",
        note: `The guest ignored the shutdown request for ${Math.round(this.o.shutdownGraceMs / 1000)} s; the domain was powered off.`,
      });
    }
    domain = await this.hv.observe(uid);
    const off = !domain || domain.state === "shutoff";
    if (off) this.shutdownRequested.delete(uid);
    return off;
  }

  /** The VM's status as this host sees it: one apply, only when something changed. */
  private async report(
    vm: VirtualMachine,
    domain: ObservedDomain | undefined,
    problem?: HostProblem,
    restartedAt = vm.status?.restartedAt,
    evacuated = false,
  ): Promise<SyncResult | undefined> {
    const status: Record<string, unknown> = { ...desiredVmStatus(vm, this.host, domain) };
    // The ISO drive holds spec.iso's disc: attachIso's job waits for this.
    const disc = vm.spec.iso ? this.o.world.template(vm.spec.iso) : undefined;
    if (disc && domain?.iso === discPath(disc, this.o.paths.cache)) status.iso = vm.spec.iso;
    if (restartedAt) status.restartedAt = restartedAt;
    if (problem || evacuated) {
      const ready = evacuated
        ? {
            reason: "Evacuated",
            message: `Stopped on ${this.host} for maintenance; it starts again on another host.`,
          }
        : { reason: (problem as HostProblem).reason, message: (problem as HostProblem).message };
      status.conditions = (status.conditions as { type: string }[]).map((c) =>
        c.type === "Ready" ? { ...c, status: "False", ...ready } : c,
      );
      // A wait is no failure: the VM stays Pending and says what it waits for.
      if (problem && !(problem instanceof Waiting)) status.state = domain ? status.state : "Error";
      if (evacuated) Object.assign(status, { state: "Stopped", evacuatedFrom: this.host });
    }
    const wrote = await this.o.writes.vmStatus(vm, status);
    if (wrote && problem && !(problem instanceof Waiting))
      await this.o.writes.event(Resources.virtualMachines, vm, {
        type: "Warning",
        reason: problem.reason,
        action: "Define",
        note: problem.message,
      });
    return undefined;
  }

  /** Deleted: the domain and the root disk go, data volumes are let go, then the finalizer. */
  private async release(
    vm: VirtualMachine,
    domain: ObservedDomain | undefined,
    volumes: Map<string, Volume>,
    log: Logger,
  ) {
    const uid = vm.metadata.uid as string;
    if (domain) await this.removeDomain(uid, domain);
    await removeConfigDrive(configDrivePath(this.o.paths.cache, uid));
    // The root disk goes with its VM (its Volume's finalizer would remove it too, later).
    const rootPool = volumes.get(rootVolumeName(vm.metadata.name as string))?.status?.pool;
    if (rootPool && this.o.storage.pathOf(rootPool) !== undefined)
      await this.hv.deleteDisk(rootPool, rootDiskName(uid));
    await this.volumes.detachUnlisted(vm, volumes, new Set());
    await this.removeUnusedNetworks(log, vm);
    if (await this.o.writes.removeFinalizer(Resources.virtualMachines, vm, DOMAIN_FINALIZER))
      log.info("domain deleted; finalizer removed");
  }

  /**
   * Maintenance: the VM stops gracefully and its domain goes; its disks stay (moving them is the
   * storage's work). `evacuatedFrom` tells the orchestration it may place the VM elsewhere.
   */
  private async evacuate(
    vm: VirtualMachine,
    domain: ObservedDomain | undefined,
    volumes: Map<string, Volume>,
    log: Logger,
  ) {
    if (vm.status?.evacuatedFrom === this.host && !domain) return undefined;
    const live = await this.o.migration?.evacuateLive(vm, domain);
    if (live) {
      log.debug(live);
      return { requeueAfterMs: 2_000 };
    }
    if (domain && !(await this.stopGracefully(vm))) return { requeueAfterMs: 2_000 };
    if (domain) await this.removeDomain(vm.metadata.uid as string, domain);
    await this.volumes.detachUnlisted(vm, volumes, new Set());
    await this.report(vm, undefined, undefined, vm.status?.restartedAt, true);
    await this.removeUnusedNetworks(log, vm);
    log.info("stopped for maintenance; handed back to the orchestration");
    await this.o.writes.event(Resources.virtualMachines, vm, {
      type: "Normal",
      reason: "Evacuated",
      action: "Stop",
      note: `Stopped on ${this.host} for maintenance; it starts again on another host.`,
    });
    return undefined;
  }

  private async removeDomain(uid: string, domain: ObservedDomain): Promise<void> {
    if (domain.state !== "shutoff") await this.hv.powerOff(uid);
    await this.hv.undefine(uid);
    await removeConfigDrive(configDrivePath(this.o.paths.cache, uid));
  }

  /**
   * The VM is no longer bound here, and this host did not let it go: it may run elsewhere now, so
   * its domain here is powered off (never two copies running); the definition and disks stay.
   */
  private async supersede(uid: string, log: Logger): Promise<void> {
    const domain = await this.hv.observe(uid);
    if (!domain || !this.owns(domain) || domain.state === "shutoff") return;
    await this.hv.powerOff(uid);
    log.warn(
      { uid, state: domain.state, owner: domain.owner },
      "powered off a domain whose VM is no longer bound to this host; its disks stay",
    );
  }

  /** Networks no live VM here uses are torn down; the others keep exactly their reservations. */
  removeUnusedNetworks(log: Logger, leaving?: VirtualMachine): Promise<void> {
    return syncHostNetworks({ ...this.o, hypervisor: this.hv }, log, leaving);
  }
}

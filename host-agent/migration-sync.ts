// The agent's side of live migration. As the target of a VirtualMachineMigration it makes the
// VM's networks here and says where it serves the guest's console (status.targetPrepared); as the
// source it drives the transfer (status.transfer: Running with progress, then Completed, Failed or
// Cancelled), writing Running before it starts so that a restart finds out where the guest went.
// Meanwhile the VM loop leaves the VM alone (`holds`): the guest must never start twice. Once
// compute bound the VM here, the loop adopts the guest that arrived (`adopt`): its owner mark
// becomes this host's, and nothing is started.
import type { Logger } from "pino";
import {
  type Host,
  isFinalMigrationPhase,
  type Network,
  Resources,
  type VirtualMachine,
  type VirtualMachineMigration,
} from "../crds/index.ts";
import { type KubeClient, objectKey } from "../runtime/client.ts";
import type { InformerFactory } from "../runtime/component.ts";
import { Controller } from "../runtime/controller.ts";
import type { Informer } from "../runtime/informer.ts";
import type { RuntimeMetrics } from "../runtime/metrics.ts";
import { unlessGone } from "../runtime/objects.ts";
import { removeConfigDrive } from "./config-drive.ts";
import type { Hypervisor, ObservedDomain, Owner } from "./hypervisor.ts";
import { networkSpecFor } from "./network-xml.ts";
import { reservationsFor } from "./planner.ts";
import type { VmWorld } from "./vm-sync.ts";

export const MIGRATION_FIELD_MANAGER = "stratus-host-agent-migration";
export const MIGRATION_TARGET_FIELD_MANAGER = "stratus-host-agent-migration-target";
/** How often a running transfer's progress is written. */
const PROGRESS_INTERVAL_MS = 2_000;
const PROGRESS_SAMPLE_MS = 250;
/** How long maintenance waits for compute to make a VM's live migration before it stops the guest. */
const EVACUATION_WAIT_MS = 30_000;

type Transfer = NonNullable<NonNullable<VirtualMachineMigration["status"]>["transfer"]>;

export interface MigrationWorkOptions {
  hostName: string;
  client: KubeClient;
  informers: InformerFactory;
  logger: Logger;
  metrics: RuntimeMetrics;
  /** MiB/s a transfer may use (0: no cap). */
  bandwidthMiBps?: number;
  /** The VM loop looks at this VM again (a transfer ended). */
  requeueVm: (key: string) => void;
}

/** What the VM loop asks of live migration (MigrationWork answers). */
export interface MigrationHooks {
  /** Why to leave the VM's domain alone now, or undefined. */
  holds(vm: VirtualMachine): string | undefined;
  /** The guest that arrived by live migration, made this host's; undefined when it is not one. */
  adopt(vm: VirtualMachine, domain: ObservedDomain): Promise<ObservedDomain | undefined>;
  /** Maintenance: why to wait for a live migration instead of stopping the guest, or undefined. */
  evacuateLive(vm: VirtualMachine, domain: ObservedDomain | undefined): Promise<string | undefined>;
}

interface Running {
  cancelled: boolean;
}

export class MigrationWork implements MigrationHooks {
  private readonly o: MigrationWorkOptions;
  /** Migrations away from this host, and to it. */
  private readonly outgoing: Informer<VirtualMachineMigration>;
  private readonly incoming: Informer<VirtualMachineMigration>;
  readonly controller: Controller;
  /** Transfers this process drives now, by migration key. */
  private readonly driving = new Map<string, Running>();
  /** VMs moving here, by key: their networks exist here before the guest arrives. */
  private readonly arriving = new Map<string, VirtualMachine>();
  /** When maintenance first asked about a VM that has no live migration yet, by VM UID. */
  private readonly evacuationAsked = new Map<string, number>();
  private context:
    | {
        owner: Owner;
        hypervisor: Hypervisor;
        world: VmWorld;
        consoleSocket: (uid: string) => string;
        /** Builds the arriving guest's config drive here; undefined when it needs none. */
        configDrive: (vm: VirtualMachine, networks: Map<string, Network>) => Promise<string | undefined>;
        /** Where this host keeps a guest's config drive. */
        configDrivePath: (vmUid: string) => string;
        /** Copies the disc of the arriving guest's ISO drive here; its path, or undefined with none. */
        disc: (vm: VirtualMachine) => Promise<string | undefined>;
      }
    | undefined;

  constructor(options: MigrationWorkOptions) {
    this.o = options;
    const { informers, hostName } = options;
    this.outgoing = informers.for(Resources.virtualMachineMigrations, {
      fieldSelector: `status.sourceHost=${hostName}`,
    });
    this.incoming = informers.for(Resources.virtualMachineMigrations, {
      fieldSelector: `status.targetHost=${hostName}`,
    });
    this.controller = new Controller({
      name: "host-agent-migration",
      logger: options.logger,
      metrics: options.metrics,
      reconcile: (key, log) =>
        key.startsWith("out/") ? this.syncOutgoing(key.slice(4), log) : this.syncIncoming(key.slice(3), log),
    })
      .watch(this.outgoing, (m) => [`out/${objectKey(m)}`])
      .watch(this.incoming, (m) => [`in/${objectKey(m)}`]);
  }

  /** Called once the hypervisor is prepared; nothing runs before. */
  start(context: NonNullable<MigrationWork["context"]>): void {
    this.context = context;
  }

  /** The VMs arriving here (for the host's networks and DHCP reservations). */
  arrivingVms(): VirtualMachine[] {
    return [...this.arriving.values()];
  }

  /** Why the VM loop must leave this VM's domain alone now: a transfer of it is under way or done. */
  holds(vm: VirtualMachine): string | undefined {
    const moving = this.migrationsOf(this.outgoing, vm).find(
      (m) =>
        this.driving.has(objectKey(m)) ||
        (!isFinalMigrationPhase(m.status?.phase) &&
          (m.status?.transfer?.state === "Running" || m.status?.transfer?.state === "Completed")),
    );
    return moving
      ? `live migration ${moving.metadata.name} to ${moving.status?.targetHost} is under way`
      : undefined;
  }

  /**
   * Maintenance: a running guest compute can move live (it makes `evacuate-<uid>` for those) waits
   * for that migration; one that failed, or a stopped guest, is evacuated the old way (stop, move,
   * start). Compute's word is awaited at most EVACUATION_WAIT_MS.
   */
  async evacuateLive(vm: VirtualMachine, domain: ObservedDomain | undefined): Promise<string | undefined> {
    const uid = vm.metadata.uid as string;
    if (domain?.state !== "running" || vm.status?.state !== "Running") return undefined;
    const name = `evacuate-${uid}`;
    const m =
      this.outgoing.get(`${vm.metadata.namespace}/${name}`) ??
      (await unlessGone(
        this.o.client.get<VirtualMachineMigration>(
          Resources.virtualMachineMigrations,
          name,
          vm.metadata.namespace,
        ),
      ));
    const phase = m?.status?.phase;
    if (phase === "Failed" || phase === "Cancelled" || phase === "Succeeded") return undefined;
    if (!m) {
      const since = this.evacuationAsked.get(uid) ?? Date.now();
      this.evacuationAsked.set(uid, since);
      if (Date.now() - since > EVACUATION_WAIT_MS) return undefined;
      return `maintenance: waiting for compute to say whether ${vm.metadata.name} moves live`;
    }
    return `maintenance: ${vm.metadata.name} moves live (${m.metadata.name} is ${phase ?? "new"})`;
  }

  /** The guest that arrived by a completed migration from its owner's host: marked as this host's. */
  async adopt(vm: VirtualMachine, domain: ObservedDomain): Promise<ObservedDomain | undefined> {
    const { owner, hypervisor } = this.require();
    if (domain.owner?.cluster !== owner.cluster) return undefined;
    const arrived = this.migrationsOf(this.incoming, vm).some(
      (m) =>
        m.status?.transfer?.state === "Completed" &&
        m.status.sourceHost === domain.owner?.host &&
        m.status.targetHost === owner.host,
    );
    if (!arrived) return undefined;
    this.o.logger.info(
      { vm: objectKey(vm), from: domain.owner.host },
      "adopted a guest that arrived by live migration",
    );
    return hypervisor.adopt(vm.metadata.uid as string);
  }

  private migrationsOf(
    informer: Informer<VirtualMachineMigration>,
    vm: VirtualMachine,
  ): VirtualMachineMigration[] {
    return informer
      .list()
      .filter((m) => m.metadata.namespace === vm.metadata.namespace && m.spec.vm === vm.metadata.name);
  }

  private require(): NonNullable<MigrationWork["context"]> {
    if (!this.context) throw new Error("the host agent is not running yet");
    return this.context;
  }

  private async syncIncoming(key: string, log: Logger): Promise<undefined> {
    const m = this.incoming.get(key);
    const vmKey = m ? `${m.metadata.namespace}/${m.spec.vm}` : undefined;
    if (!m || !vmKey || m.status?.targetHost !== this.o.hostName || isFinalMigrationPhase(m.status.phase)) {
      const stillArriving = new Set(
        this.incoming
          .list()
          .filter((i) => !isFinalMigrationPhase(i.status?.phase))
          .map((i) => `${i.metadata.namespace}/${i.spec.vm}`),
      );
      for (const arriving of this.arriving.keys())
        if (!stillArriving.has(arriving)) this.arriving.delete(arriving);
      await this.dropUnusedDrive(m, log);
      log.debug("no migration to this host under way for it");
      return undefined;
    }
    if (m.status.transfer?.state === "Completed") this.o.requeueVm(vmKey);
    if (m.status.targetPrepared) return undefined;
    const { owner, hypervisor, world, consoleSocket, configDrive, disc } = this.require();
    const vm = await unlessGone(
      this.o.client.get<VirtualMachine>(Resources.virtualMachines, m.spec.vm, m.metadata.namespace),
    );
    if (!vm) return undefined;
    this.arriving.set(vmKey, vm);
    const vms = [...world.boundVms(), vm];
    const networks = await world.networks(vm);
    for (const network of networks.values())
      await hypervisor.syncNetwork(networkSpecFor(network, owner), reservationsFor(network, vms));
    // Built anew here, as CloudStack does; when it cannot be, the guest's CD-ROM arrives empty and
    // the drive is built at its next boot here (a guest reads it only at boot).
    const drive = await configDrive(vm, networks).catch((error: unknown) => {
      log.warn(
        { err: String(error) },
        "cannot build the arriving guest's config drive; its CD-ROM arrives empty",
      );
      return undefined;
    });
    // Unlike the config drive, a disc is in use (an install from it): the move waits until it is here.
    const iso = await disc(vm);
    await this.o.client.apply(
      Resources.virtualMachineMigrations,
      {
        metadata: { name: m.metadata.name as string, namespace: m.metadata.namespace as string },
        status: {
          targetPrepared: {
            preparedAt: new Date().toISOString(),
            consoleSocket: consoleSocket(vm.metadata.uid as string),
            ...(drive ? { configDrive: drive } : {}),
            ...(iso ? { iso } : {}),
          },
        },
      },
      { fieldManager: MIGRATION_TARGET_FIELD_MANAGER, subresource: "status" },
    );
    log.info({ vm: vmKey, from: m.status.sourceHost }, "ready to take a live-migrated guest");
    return undefined;
  }

  private async syncOutgoing(key: string, log: Logger): Promise<{ requeueAfterMs: number } | undefined> {
    const m = this.outgoing.get(key);
    const running = this.driving.get(key);
    if (running) {
      // Deleting the migration cancels it; the guest goes on running here.
      if ((!m || m.metadata.deletionTimestamp) && !running.cancelled) {
        running.cancelled = true;
        const uid = this.vmOf(m)?.metadata.uid;
        if (uid)
          await this.require()
            .hypervisor.abortMigration(uid)
            .catch((error: unknown) => log.warn({ err: String(error) }, "abort failed"));
      }
      return undefined;
    }
    if (
      !m ||
      m.status?.sourceHost !== this.o.hostName ||
      !m.status.targetHost ||
      isFinalMigrationPhase(m.status.phase)
    )
      return undefined;
    const transfer = m.status.transfer;
    if (transfer?.state === "Running") return this.recover(m, transfer, log);
    if (transfer) return undefined;
    if (m.metadata.deletionTimestamp)
      return this.report(m, { state: "Cancelled", message: "Deleted before the transfer started." });
    if (m.status.phase !== "Scheduling") return undefined;
    if (!m.status.targetPrepared) return undefined; // the target's agent is not ready yet; its write brings us back
    const { hypervisor } = this.require();
    const vm = this.vmOf(m);
    const uid = vm?.metadata.uid as string | undefined;
    const domain = uid ? await hypervisor.observe(uid) : undefined;
    if (!vm || !uid || !domain || domain.state !== "running")
      return this.report(m, {
        state: "Failed",
        message: `VM ${m.spec.vm} does not run on ${this.o.hostName}.`,
      });
    const target = await unlessGone(this.o.client.get<Host>(Resources.hosts, m.status.targetHost));
    if (!target?.status?.migrationUri)
      return this.report(m, {
        state: "Failed",
        message: `Host ${m.status.targetHost} takes no migrations (no status.migrationUri).`,
      });
    void this.drive(key, m, uid, target, log);
    return undefined;
  }

  /** A drive built here for a guest that did not come (the move failed or was cancelled) goes. */
  private async dropUnusedDrive(m: VirtualMachineMigration | undefined, log: Logger): Promise<void> {
    if (!m?.status?.targetPrepared?.configDrive || m.status.targetHost !== this.o.hostName) return;
    if (m.status.phase !== "Failed" && m.status.phase !== "Cancelled") return;
    const vm = this.context?.world.vm(`${m.metadata.namespace}/${m.spec.vm}`);
    if (!vm || !this.context || vm.status?.host === this.o.hostName) return; // here after all: in use
    // This host's own path for the VM, never a path the status names.
    const drive = this.context.configDrivePath(vm.metadata.uid as string);
    await removeConfigDrive(drive);
    log.info({ drive }, "removed the config drive of a guest that did not arrive");
  }

  private vmOf(m: VirtualMachineMigration | undefined): VirtualMachine | undefined {
    if (!m) return undefined;
    const vm = this.require().world.vm(`${m.metadata.namespace}/${m.spec.vm}`);
    return vm?.status?.host === this.o.hostName ? vm : undefined;
  }

  /** Runs one transfer to its end and reports it; the Running report comes first. */
  private async drive(
    key: string,
    m: VirtualMachineMigration,
    uid: string,
    target: Host,
    log: Logger,
  ): Promise<void> {
    const { hypervisor, owner } = this.require();
    const run: Running = { cancelled: false };
    this.driving.set(key, run);
    const started = Date.now();
    let transfer: Transfer = { state: "Running", startedAt: new Date(started).toISOString() };
    // Sampled often (a fast transfer still shows its size), written at most every PROGRESS_INTERVAL_MS.
    let written = 0;
    const timer = setInterval(async () => {
      const progress = await hypervisor.migrationProgress(uid).catch(() => undefined);
      if (!progress || !this.driving.has(key)) return;
      const percent =
        progress.totalBytes > 0
          ? Math.min(99, Math.floor((100 * progress.processedBytes) / progress.totalBytes))
          : 0;
      const { totalBytes, processedBytes, remainingBytes } = progress;
      transfer = { ...transfer, totalBytes, processedBytes, remainingBytes, percent };
      if (Date.now() - written < PROGRESS_INTERVAL_MS) return;
      written = Date.now();
      await this.report(m, transfer).catch(() => undefined);
    }, PROGRESS_SAMPLE_MS);
    try {
      await this.report(m, transfer);
      log.info({ target: target.metadata.name }, "live migration started");
      const { downtimeMs } = await hypervisor.migrate(uid, {
        uri: target.status?.migrationUri as string,
        ...(target.status?.migrationAddress ? { migrateUri: `tcp://${target.status.migrationAddress}` } : {}),
        ...(this.o.bandwidthMiBps ? { bandwidthMiBps: this.o.bandwidthMiBps } : {}),
        owner: { cluster: owner.cluster, host: target.metadata.name as string },
        ...(m.status?.targetPrepared?.consoleSocket
          ? { consoleSocket: m.status.targetPrepared.consoleSocket }
          : {}),
        ...(m.status?.targetPrepared?.configDrive
          ? { configDrive: m.status.targetPrepared.configDrive }
          : {}),
        ...(m.status?.targetPrepared?.iso ? { iso: m.status.targetPrepared.iso } : {}),
      });
      const moved = transfer.totalBytes;
      transfer = {
        ...transfer,
        ...(downtimeMs !== undefined ? { downtimeMilliseconds: downtimeMs } : {}),
        state: "Completed",
        percent: 100,
        remainingBytes: 0,
        ...(moved ? { processedBytes: moved } : {}),
      };
    } catch (error) {
      const message = (error as Error).message.slice(0, 1000);
      transfer = { ...transfer, state: run.cancelled ? "Cancelled" : "Failed", message };
      log.warn(
        { err: message, cancelled: run.cancelled },
        "live migration did not complete; the guest runs on here",
      );
    } finally {
      clearInterval(timer);
    }
    const finishedAt = Date.now();
    transfer = {
      ...transfer,
      finishedAt: new Date(finishedAt).toISOString(),
      durationMilliseconds: finishedAt - started,
    };
    // Until this report lands the VM loop keeps holding the VM (driving); a failed write is retried.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.report(m, transfer);
        break;
      } catch (error) {
        if (attempt > 30) {
          log.error(
            { err: String(error) },
            "cannot report the transfer's end; the next sync finds out where the guest is",
          );
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    }
    this.driving.delete(key);
    log.info({ state: transfer.state, ms: transfer.durationMilliseconds }, "live migration ended");
    this.o.requeueVm(`${m.metadata.namespace}/${m.spec.vm}`);
  }

  /**
   * A transfer reported Running that this process does not drive: the agent restarted during it.
   * libvirt ended the migration with the agent's connection; where the guest runs now says how.
   */
  private async recover(m: VirtualMachineMigration, transfer: Transfer, log: Logger) {
    const { hypervisor } = this.require();
    const vm = this.vmOf(m);
    const uid = vm?.metadata.uid as string | undefined;
    const target = m.status?.targetHost
      ? await unlessGone(this.o.client.get<Host>(Resources.hosts, m.status.targetHost))
      : undefined;
    if (!uid || !target?.status?.migrationUri)
      return this.report(m, {
        ...transfer,
        state: "Failed",
        message: "Interrupted: the VM or its target is gone.",
      });
    if (await hypervisor.migrationProgress(uid)) return { requeueAfterMs: PROGRESS_INTERVAL_MS };
    const there = await hypervisor.remoteDomainState(target.status.migrationUri, uid);
    const here = await hypervisor.observe(uid);
    if (there === "running" || there === "paused") {
      // The guest lives on the target; a copy left paused here is stale and must never resume.
      if (here) {
        if (here.state !== "shutoff") await hypervisor.powerOff(uid);
        await hypervisor.undefine(uid);
      }
      log.warn("the transfer completed while this agent was away");
      return this.report(m, {
        ...transfer,
        state: "Completed",
        message: "Completed while the source agent restarted.",
      });
    }
    return this.report(m, {
      ...transfer,
      state: "Failed",
      message: "Interrupted: the source agent restarted during the transfer; the guest runs on here.",
    });
  }

  private async report(m: VirtualMachineMigration, transfer: Transfer): Promise<undefined> {
    await this.o.client.apply(
      Resources.virtualMachineMigrations,
      {
        metadata: { name: m.metadata.name as string, namespace: m.metadata.namespace as string },
        status: { transfer },
      },
      { fieldManager: MIGRATION_FIELD_MANAGER, subresource: "status" },
    );
    return undefined;
  }
}

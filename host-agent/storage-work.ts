// The host agent's storage side: the Volumes whose disks are here (deletion, revert, moves out) or
// coming here (moves in), the snapshots it was given to take, the templates whose image it makes
// (from a volume or snapshot here, or downloaded into the zone), the image cache, and the
// StoragePools of its zone. Its
// own watches and work queues, beside the VM loop (agent.ts), which it tells when a pool changes.
import { join } from "node:path";
import type { Logger } from "pino";
import {
  type Host,
  Resources,
  rootVolumeName,
  type StoragePool,
  type Template,
  type VirtualMachine,
  type Volume,
  type VolumeSnapshot,
  type Zone,
} from "../crds/index.ts";
import { secondaryPathOf } from "../crds/template-images.ts";
import type { KubeClient } from "../runtime/client.ts";
import type { InformerFactory } from "../runtime/component.ts";
import { Controller } from "../runtime/controller.ts";
import type { Informer } from "../runtime/informer.ts";
import type { RuntimeMetrics } from "../runtime/metrics.ts";
import { unlessGone } from "../runtime/objects.ts";
import type { AgentWrites } from "./agent-writes.ts";
import type { Hypervisor } from "./hypervisor.ts";
import { pruneImageCache } from "./image-cache.ts";
import { PoolSync } from "./pool-sync.ts";
import { S3SnapshotStore, type SnapshotStore } from "./snapshot-store.ts";
import { type SnapshotAccess, type SnapshotContext, syncRevert, syncSnapshot } from "./snapshot-sync.ts";
import { syncTemplate } from "./template-sync.ts";
import { syncVolumeDeletion } from "./volume-sync.ts";
import { discardIncomingCopy, syncVolumeTransfer } from "./volume-transfer.ts";
import { ZoneImages } from "./zone-images.ts";

/** Every how many heartbeats the pools are looked at again (free space, mounts). */
const POOL_REPORT_EVERY_BEATS = 6;

export interface StorageWorkOptions {
  hostName: string;
  zone: string;
  client: KubeClient;
  informers: InformerFactory;
  writes: AgentWrites;
  /** The VMs bound to this host. */
  placed: Informer<VirtualMachine>;
  /** This agent's Host (informer cache). */
  self: () => Host | undefined;
  /** Re-queues every VM of this host (a pool became usable or went away). */
  requeueVms: () => void;
  /** The host's template image cache. */
  cacheDir: string;
  /** How snapshots reach the zones' S3-compatible stores (the AWS SDK's, unless a test says otherwise). */
  snapshotStore?: SnapshotStore;
  logger: Logger;
  metrics: RuntimeMetrics;
}

export class StorageWork {
  /** Volumes whose disk is on this host. */
  readonly localVolumes: Informer<Volume>;
  /** Volumes moving to a pool of this host. */
  private readonly incomingVolumes: Informer<Volume>;
  /** Disks in shared pools the storage controller released to this host (their VMs run here now). */
  readonly releasedVolumes: Informer<Volume>;
  private readonly storagePools: Informer<StoragePool>;
  /** The zone, for its secondary storage. */
  private readonly zone: Informer<Zone>;
  /** Snapshots the storage controller gave this host to take. */
  private readonly snapshots: Informer<VolumeSnapshot>;
  /** The cluster's templates: those made from a volume or snapshot here get their image from this host. */
  private readonly templates: Informer<Template>;
  private readonly volumeController: Controller;
  private readonly snapshotController: Controller;
  private readonly templateController: Controller;
  /** URL templates downloaded to the zone's secondary storage when storage chose this host. */
  private readonly zoneImages: ZoneImages;
  private cachePruning: Promise<unknown> = Promise.resolve();
  /** The zone's S3-compatible store for snapshots, if it names one. */
  readonly snapshotAccess: SnapshotAccess;
  private readonly o: StorageWorkOptions;
  private hypervisor: Hypervisor | undefined;
  private poolSync: PoolSync | undefined;
  private poolSyncing: Promise<void> = Promise.resolve();
  private beats = 0;
  /** VMs paused for a snapshot's copy right now (the VM loop leaves them paused). */
  readonly pausedForCopy = new Set<string>();

  constructor(options: StorageWorkOptions) {
    this.o = options;
    const { informers, hostName } = options;
    this.localVolumes = informers.for<Volume>(Resources.volumes, {
      fieldSelector: `status.host=${hostName}`,
    });
    this.incomingVolumes = informers.for<Volume>(Resources.volumes, {
      fieldSelector: `status.transfer.target.host=${hostName}`,
    });
    this.releasedVolumes = informers.for<Volume>(Resources.volumes, {
      fieldSelector: `status.releasedTo=${hostName}`,
    });
    this.storagePools = informers.for<StoragePool>(Resources.storagePools, {
      fieldSelector: `spec.zone=${options.zone}`,
    });
    this.zone = informers.for<Zone>(Resources.zones, { fieldSelector: `metadata.name=${options.zone}` });
    this.snapshotAccess = {
      snapshotStore: (zone) => this.zone.get(zone)?.spec.secondaryStorage?.s3,
      store: options.snapshotStore ?? new S3SnapshotStore(),
      // Beside the image cache, whose pruning touches only files named after templates.
      stagingDir: join(options.cacheDir, "snapshot-staging"),
    };
    this.snapshots = informers.for<VolumeSnapshot>(Resources.volumeSnapshots, {
      fieldSelector: `status.host=${hostName}`,
    });
    const common = { logger: options.logger, metrics: options.metrics };
    this.volumeController = new Controller({
      name: "host-agent-volume",
      ...common,
      reconcile: (key, log) => this.reconcileVolume(key, log),
    })
      .watch(this.localVolumes)
      .watch(this.incomingVolumes)
      // A VM that goes away may release the volumes it held.
      .watch(options.placed, (vm) => [
        ...(vm.spec.dataVolumes ?? []).map((slot) => `${vm.metadata.namespace}/${slot.volume}`),
        `${vm.metadata.namespace}/${rootVolumeName(vm.metadata.name as string)}`,
      ]);
    this.snapshotController = new Controller({
      name: "host-agent-snapshot",
      ...common,
      reconcile: (key, log) => syncSnapshot(this.snapshots.get(key), this.context(log)),
    }).watch(this.snapshots);
    this.templates = informers.for<Template>(Resources.templates);
    // A template waits for its source here to exist and to stop being used.
    const madeFrom = (kind: "volume" | "snapshot") => (o: Volume | VolumeSnapshot) =>
      this.templates
        .list()
        .filter((t) => {
          const ref = t.spec.source[kind];
          return ref?.namespace === o.metadata.namespace && ref?.name === o.metadata.name;
        })
        .map((t) => t.metadata.name as string);
    this.zoneImages = new ZoneImages({
      host: hostName,
      zone: options.zone,
      secondaryPath: () => this.zoneStorage().secondaryPath,
      writes: options.writes,
      log: options.logger,
    });
    this.templateController = new Controller({
      name: "host-agent-template",
      ...common,
      reconcile: async (key, log) => {
        const template = this.templates.get(key);
        const made = await syncTemplate(template, {
          ...this.context(log),
          localVolume: (namespace, name) => this.localVolumes.get(`${namespace}/${name}`),
          localSnapshot: (namespace, name) => this.snapshots.get(`${namespace}/${name}`),
        });
        const downloaded = await this.zoneImages.sync(key, template);
        const after = Math.min(made?.requeueAfterMs ?? Infinity, downloaded?.requeueAfterMs ?? Infinity);
        return after === Infinity ? undefined : { requeueAfterMs: after };
      },
    })
      .watch(this.templates)
      .watch(this.zone, () => this.templates.keys())
      .watch(this.localVolumes, madeFrom("volume"))
      .watch(this.snapshots, madeFrom("snapshot"));
    // A template is gone only once nothing uses it: its cached images can go.
    this.templates.addHandlers({ onDelete: () => this.pruneCache(false) });
  }

  /** Where this host's pools are and where new disks go (the VM loop's view of storage). */
  get pools(): PoolSync {
    if (!this.poolSync) throw new Error("the storage work has not started");
    return this.poolSync;
  }

  /** Binds the hypervisor and the local pool's directory; call before the informers start. */
  prepare(hypervisor: Hypervisor, localPath: string): PoolSync {
    this.hypervisor = hypervisor;
    this.poolSync = new PoolSync({
      host: this.o.hostName,
      client: this.o.client,
      hypervisor,
      pools: () => this.storagePools.list(),
      self: this.o.self,
      localPath,
      log: this.o.logger,
    });
    return this.poolSync;
  }

  /** Once the caches are synced: the pools prepared and reported, and kept so as they change. */
  async start(): Promise<void> {
    await this.pruneCache(true);
    await this.pools.sync();
    const resync = () => this.resyncPools();
    // The storage controller rolls every pool's status up as volumes come and go: only a new,
    // changed (spec) or removed pool concerns this host.
    this.storagePools.addHandlers({
      onAdd: resync,
      onUpdate: (old, pool) => {
        if (old.metadata.generation !== pool.metadata.generation) resync();
      },
      onDelete: resync,
    });
  }

  async run(signal: AbortSignal): Promise<void> {
    await Promise.all([
      this.volumeController.run(signal),
      this.snapshotController.run(signal),
      this.templateController.run(signal),
    ]);
    await this.zoneImages.stopAll();
  }

  /** The agent's zone and where its secondary storage is mounted. */
  /** The host's zone as cached. */
  zoneObject(): Zone | undefined {
    return this.zone.get(this.o.zone);
  }

  zoneStorage(): { name: string; secondaryPath?: string } {
    const path = secondaryPathOf(this.zone.get(this.o.zone));
    return { name: this.o.zone, ...(path ? { secondaryPath: path } : {}) };
  }

  private pruneCache(startingUp: boolean): Promise<unknown> {
    const live = () => new Set(this.templates.list().map((t) => t.metadata.uid as string));
    this.cachePruning = this.cachePruning
      .then(() => pruneImageCache(this.o.cacheDir, live(), startingUp))
      .then(
        (removed) => {
          if (removed.length > 0)
            this.o.logger.info({ removed }, "removed cached images of deleted templates");
        },
        (error: unknown) => this.o.logger.warn({ err: String(error) }, "image cache pruning failed"),
      );
    return this.cachePruning;
  }

  /** Free space changes with every disk written: looked at every few beats, reported on a real change. */
  onHeartbeat(): void {
    if (++this.beats % POOL_REPORT_EVERY_BEATS === 0) this.resyncPools();
  }

  /** A VolumeSnapshot of the namespace, read fresh. */
  snapshot(namespace: string, name: string): Promise<VolumeSnapshot | undefined> {
    return unlessGone(this.o.client.get<VolumeSnapshot>(Resources.volumeSnapshots, name, namespace));
  }

  private resyncPools(): void {
    const pools = this.poolSync;
    if (!pools) return;
    this.poolSyncing = this.poolSyncing
      .then(() => pools.sync())
      .then(
        (usable) => {
          if (!usable) return;
          // A pool that became usable (or went away) may unblock VMs and moves waiting for it.
          this.o.requeueVms();
          for (const key of this.incomingVolumes.keys()) this.volumeController.queue.add(key);
        },
        (error: unknown) => this.o.logger.warn({ err: String(error) }, "storage pool sync failed"),
      );
  }

  private async reconcileVolume(key: string, log: Logger) {
    const volume = this.localVolumes.get(key) ?? this.incomingVolumes.get(key);
    const hypervisor = this.requireHypervisor();
    await discardIncomingCopy(volume, { ...this.context(log), storage: this.pools });
    const deletion = await syncVolumeDeletion(volume, {
      host: this.o.hostName,
      hypervisor,
      writes: this.o.writes,
      boundVms: () => this.o.placed.list(),
      log,
    });
    if (deletion) return deletion;
    const reverting = await syncRevert(volume, this.context(log));
    if (reverting) return reverting;
    return syncVolumeTransfer(volume, {
      ...this.context(log),
      storage: this.pools,
      fresh: (v) => this.readVolume(v.metadata.namespace as string, v.metadata.name as string),
    });
  }

  private readVolume(namespace: string, name: string): Promise<Volume | undefined> {
    return unlessGone(this.o.client.get<Volume>(Resources.volumes, name, namespace));
  }

  private context(log: Logger): SnapshotContext {
    return {
      host: this.o.hostName,
      hypervisor: this.requireHypervisor(),
      storage: this.pools,
      writes: this.o.writes,
      volume: (namespace, name) => this.readVolume(namespace, name),
      snapshot: (namespace, name) => this.snapshot(namespace, name),
      secondaryPath: (zone) => secondaryPathOf(this.zone.get(zone)),
      ...this.snapshotAccess,
      pausedForCopy: this.pausedForCopy,
      log,
    };
  }

  private requireHypervisor(): Hypervisor {
    if (!this.hypervisor) throw new Error("the host agent is not running yet");
    return this.hypervisor;
  }
}

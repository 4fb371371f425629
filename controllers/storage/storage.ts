// Storage: the deletion guard of data volumes (InUse, and the stratus.io/storage finalizer held
// while a VM attaches the volume), the release of volumes no host ever made a disk for, where a
// disk must move when its VM went to a host that cannot reach it (transfer.target), each host's
// local StoragePool, and the pools' roll-up and deletion guard. Where a disk is (status.host,
// pool, path) is a fact only the agent whose pool holds it can tell; the agents copy the bytes.
// Snapshots (snapshots.ts): which host takes each one, and the recurring snapshot policies.
// Primary-storage limits (volume-admission.ts): the size each volume may take, before a disk is made.
// Templates (templates.ts): which host downloads a URL template into each zone, and their removal.
import type { Logger } from "pino";
import { DISK_FINALIZER, STORAGE_FINALIZER, STORAGE_POOL_FINALIZER } from "../../crds/finalizers.ts";
import {
  type DiskOffering,
  type Host,
  Resources,
  rootVolumeName,
  type ServiceOffering,
  type StoragePool,
  type VirtualMachine,
  type Volume,
} from "../../crds/index.ts";
import { localPoolName } from "../../crds/kinds/storage-pool.ts";
import { isAlreadyExists, isNotFound, objectKey } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import type { ConditionInput } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import {
  addFinalizer,
  applyStatus,
  notWrittenIfGone,
  ownerReference,
  removeFinalizer,
} from "../../runtime/objects.ts";
import { ROLLUP_DELAY_MS } from "../settings.ts";
import { desiredPoolStatus, localPoolFor } from "./pool-status.ts";
import { needOf, POOLS_BY_ZONE, poolUsages, rootVolumeOwner, VOLUMES_BY_POOL } from "./pool-usage.ts";
import { snapshotControllers } from "./snapshots.ts";
import { templateController } from "./templates.ts";
import { decideVolumeStatus } from "./transfer-target.ts";
import { volumeAdmissionController } from "./volume-admission.ts";

/** The VM a data volume belongs to: the VM attaching it, else the oldest VM asking for it. */
export function volumeUser(volume: Volume, attaching: readonly VirtualMachine[]): VirtualMachine | undefined {
  const live = attaching.filter((vm) => !vm.metadata.deletionTimestamp);
  const holder = volume.status?.attachedTo?.virtualMachine;
  return (
    live.find((vm) => vm.metadata.name === holder) ??
    // Two VMs asking for one volume: the older one gets it (compute tells the other why not).
    [...live].sort(
      (a, b) =>
        (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? "") ||
        (a.metadata.name as string).localeCompare(b.metadata.name as string),
    )[0]
  );
}

const dataVolumeKeys = (vm: VirtualMachine) =>
  (vm.spec.dataVolumes ?? []).map((d) => `${vm.metadata.namespace}/${d.volume}`);

/** The volumes whose disk may have to follow the VM: its data volumes and its ROOT volume. */
const usedVolumeKeys = (vm: VirtualMachine) => [
  ...dataVolumeKeys(vm),
  `${vm.metadata.namespace}/${rootVolumeName(vm.metadata.name as string)}`,
];

export const storageComponent: Component = {
  name: "storage",
  description:
    "storage: volume moves between pools, local pools, pool roll-ups, deletion guards, snapshot binding and policies, template downloads per zone",
  setup(context) {
    const { client, informers, metrics, logger, fieldManager } = context;
    const volumes = informers.for<Volume>(Resources.volumes, { indexers: VOLUMES_BY_POOL });
    const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
      indexers: { dataVolume: dataVolumeKeys },
    });
    const hosts = informers.for<Host>(Resources.hosts, { indexers: { zone: (host) => [host.spec.zone] } });
    const pools = informers.for<StoragePool>(Resources.storagePools, { indexers: POOLS_BY_ZONE });
    const diskOfferings = informers.for<DiskOffering>(Resources.diskOfferings);
    const serviceOfferings = informers.for<ServiceOffering>(Resources.serviceOfferings);
    const diskOffering = (name: string | undefined) => (name ? diskOfferings.get(name) : undefined);
    const volumesIn = (pool: string) => volumes.byIndex("pool", pool);

    /** The VM using the volume: a ROOT volume's owner, a data volume's attaching VM. */
    function userOf(volume: Volume): VirtualMachine | undefined {
      if (volume.spec.type !== "ROOT")
        return volumeUser(volume, vms.byIndex("dataVolume", objectKey(volume)));
      const owner = rootVolumeOwner(volume);
      const vm = owner ? vms.get(owner) : undefined;
      const uid = volume.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine")?.uid;
      return vm && vm.metadata.uid === uid ? vm : undefined;
    }

    async function writeVolumeStatus(
      volume: Volume,
      user: VirtualMachine | undefined,
      inUse?: ConditionInput,
    ) {
      const host = user?.status?.host ? hosts.get(user.status.host) : undefined;
      const decision = decideVolumeStatus({
        volume,
        need: needOf(
          volume,
          diskOffering,
          user ? serviceOfferings.get(user.spec.serviceOffering) : undefined,
        ),
        user,
        host,
        hostNamed: (name) => hosts.get(name),
        pools: poolUsages(
          pools.byIndex("zone", volume.spec.zone),
          volumesIn,
          diskOffering,
          new Set([objectKey(volume)]),
        ),
        ...(inUse ? { inUse } : {}),
      });
      if (decision.write) {
        const { name, namespace } = volume.metadata;
        await client
          .apply(
            Resources.volumes,
            {
              metadata: {
                name: name as string,
                namespace: namespace as string,
                ...(decision.guarded ? { resourceVersion: volume.metadata.resourceVersion as string } : {}),
              },
              status: decision.status,
            },
            { fieldManager, subresource: "status" },
          )
          .catch((error: unknown) => {
            if (!isNotFound(error)) throw error;
          });
      }
      return decision.requeueAfterMs === undefined ? undefined : { requeueAfterMs: decision.requeueAfterMs };
    }

    async function release(volume: Volume, user: VirtualMachine | undefined, log: Logger) {
      if (user) {
        const message = `Deletion waits: VM ${user.metadata.name} attaches the volume; detach it first.`;
        await writeVolumeStatus(volume, user, inUse(message, user));
        return;
      }
      if (
        await removeFinalizer(client, Resources.volumes, volume, STORAGE_FINALIZER).catch(notWrittenIfGone)
      ) {
        log.info("no VM attaches the volume; released it for deletion");
        return; // the next version comes through the watch
      }
      // No host's pool ever held it: no agent will come to remove a disk that does not exist.
      if (
        !volume.status?.host &&
        (await removeFinalizer(client, Resources.volumes, volume, DISK_FINALIZER).catch(notWrittenIfGone))
      )
        log.info("no disk was ever created for the volume; released it");
    }

    const volumeController = new Controller({
      name: "storage",
      logger,
      metrics,
      async reconcile(key, log) {
        const volume = volumes.get(key);
        if (!volume) return undefined;
        const isData = volume.spec.type !== "ROOT";
        const user = userOf(volume);
        if (volume.metadata.deletionTimestamp) {
          await release(volume, isData ? user : undefined, log);
          return undefined;
        }
        return writeVolumeStatus(volume, user, isData ? inUse(undefined, user) : undefined);
      },
    })
      .watch(volumes)
      .watch(vms, usedVolumeKeys);

    // Each host has its local pool; created once, then the administrator's (maintenance, tags).
    const localPools = new Controller({
      name: "storage-local-pools",
      logger,
      metrics,
      async reconcile(name, log) {
        const host = hosts.get(name);
        if (!host || host.metadata.deletionTimestamp || pools.get(localPoolName(name))) return;
        const { metadata, spec } = localPoolFor(host);
        try {
          await client.create<StoragePool>(Resources.storagePools, {
            apiVersion: "stratus.io/v1alpha1",
            kind: "StoragePool",
            metadata: {
              ...metadata,
              finalizers: [STORAGE_POOL_FINALIZER],
              ownerReferences: [ownerReference(Resources.hosts, host)],
            },
            spec,
          });
          log.info({ pool: metadata.name }, "created the host's local pool");
        } catch (error) {
          if (!isAlreadyExists(error)) throw error;
        }
      },
    })
      .watch(hosts)
      .watch(pools, (pool) => (pool.spec.type === "local" && pool.spec.host ? [pool.spec.host] : []));

    const poolRollup = new Controller({
      name: "storage-pool-rollup",
      logger,
      metrics,
      async reconcile(name, log) {
        const pool = pools.get(name);
        if (!pool) return;
        const held = volumesIn(name);
        if (pool.metadata.deletionTimestamp && !held.some((v) => v.status?.pool === name)) {
          if (
            await removeFinalizer(client, Resources.storagePools, pool, STORAGE_POOL_FINALIZER).catch(
              notWrittenIfGone,
            )
          )
            log.info("no volume is in the pool; released it for deletion");
          return;
        }
        if (
          !pool.metadata.deletionTimestamp &&
          (await addFinalizer(client, Resources.storagePools, pool, STORAGE_POOL_FINALIZER).catch(
            notWrittenIfGone,
          ))
        )
          return; // the next version comes through the watch
        const sizeOf = (volume: Volume) => needOf(volume, diskOffering).sizeBytes;
        const status = desiredPoolStatus(pool, hosts.byIndex("zone", pool.spec.zone), held, sizeOf);
        await applyStatus(client, Resources.storagePools, pool, status, fieldManager).catch(
          (error: unknown) => {
            if (!isNotFound(error)) throw error;
          },
        );
      },
    })
      .watch(pools)
      // A burst of volume or host changes is one write per pool.
      .watch(volumes, (volume) => VOLUMES_BY_POOL.pool(volume), { delayMs: ROLLUP_DELAY_MS })
      .watch(hosts, (host) => pools.byIndex("zone", host.spec.zone).map((p) => p.metadata.name as string), {
        delayMs: ROLLUP_DELAY_MS,
      });
    return [
      volumeController,
      localPools,
      poolRollup,
      volumeAdmissionController(context, volumes),
      ...snapshotControllers(context, volumes),
      templateController(context),
    ];
  },
};

function inUse(waiting: string | undefined, user: VirtualMachine | undefined): ConditionInput {
  const used = waiting !== undefined || user !== undefined;
  return {
    type: "InUse",
    status: used ? "True" : "False",
    reason: waiting ? "DeletionBlocked" : used ? "Attached" : "Detached",
    message: waiting ?? (user ? `Used by VM ${user.metadata.name}.` : "No VM uses the volume."),
  };
}

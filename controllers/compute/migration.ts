// Compute's migration controller: decides each VirtualMachineMigration (migration-decision.ts)
// and writes its phase, source and target. Admissions are counted per host with the ones this
// process made and the cache does not show yet (as the scheduler's assumed placements), so a
// burst of migrations never exceeds the per-host limit. The host move itself is compute's
// orchestration write (status.host with the VM's resourceVersion as precondition, compute.ts).

import type { Logger } from "pino";
import type { AffinityType, Host } from "../../crds/index.ts";
import {
  isFinalMigrationPhase,
  MIGRATION_FINALIZER,
  Resources,
  rootVolumeName,
  type ServiceOffering,
  type StoragePool,
  type VirtualMachine,
  type VirtualMachineMigration,
  type Volume,
} from "../../crds/index.ts";
import { isConflict, isNotFound, type KubeClient, objectKey } from "../../runtime/client.ts";
import { Controller } from "../../runtime/controller.ts";
import type { EventRecorder } from "../../runtime/events.ts";
import type { Informer } from "../../runtime/informer.ts";
import type { RuntimeMetrics } from "../../runtime/metrics.ts";
import { addFinalizer, notWrittenIfGone, removeFinalizer, statusSays } from "../../runtime/objects.ts";
import { affinityOf, HostUsageCache } from "../scheduler/host-usage.ts";
import { type DiskOfferingOf, needOf, poolUsages } from "../storage/pool-usage.ts";
import { EVACUATING_HOST_LABEL, reconcileMaintenanceMigrations } from "./maintenance-migrations.ts";
import { decideMigration, type MigrationInput } from "./migration-decision.ts";

/** The informer index of migrations by the VM they move (`namespace/name`). */
export const MIGRATIONS_BY_VM = {
  vm: (m: VirtualMachineMigration) => [`${m.metadata.namespace}/${m.spec.vm}`],
};

/** Keys of hosts whose maintenance may make migrations (no namespace has a colon). */
const MAINTENANCE_KEY = "maintenance:";
const maintenanceOf = (host: string | undefined) => (host ? [`${MAINTENANCE_KEY}${host}`] : []);

/** Retry for a migration waiting for a free slot. */
const WAITING_RETRY_MS = 5_000;

export interface MigrationControllerDeps {
  client: KubeClient;
  fieldManager: string;
  logger: Logger;
  metrics: RuntimeMetrics;
  events: EventRecorder;
  migrations: Informer<VirtualMachineMigration>;
  vms: Informer<VirtualMachine>;
  volumes: Informer<Volume>;
  pools: Informer<StoragePool>;
  hosts: Informer<Host>;
  offerings: Informer<ServiceOffering>;
  diskOffering: DiskOfferingOf;
  usage: HostUsageCache;
  /** The type of the AffinityGroup `<namespace>/<name>`, from the cache. */
  affinityGroupType: (key: string) => AffinityType | undefined;
  maxPerHost: number;
}

/** The VM's ROOT and data volumes as the cache shows them. */
export function volumesOf(vm: VirtualMachine, volumes: Informer<Volume>): Volume[] {
  const namespace = vm.metadata.namespace as string;
  const names = [
    rootVolumeName(vm.metadata.name as string),
    ...(vm.spec.dataVolumes ?? []).map((d) => d.volume),
  ];
  return names.flatMap((name) => volumes.get(`${namespace}/${name}`) ?? []);
}

/** What the decision needs to know about a VM and its zone, from the caches. */
export function migrationFacts(
  deps: Pick<
    MigrationControllerDeps,
    "volumes" | "pools" | "hosts" | "offerings" | "diskOffering" | "usage" | "affinityGroupType"
  >,
  vm: VirtualMachine | undefined,
): Pick<MigrationInput, "demand" | "storage" | "hosts"> {
  const offering = vm ? deps.offerings.get(vm.spec.serviceOffering) : undefined;
  const own = vm ? volumesOf(vm, deps.volumes) : [];
  const zonePools = vm ? deps.pools.byIndex("zone", vm.spec.zone) : [];
  return {
    demand:
      vm && offering
        ? HostUsageCache.demandOf(
            vm,
            offering,
            [],
            affinityOf(vm, (name) => deps.affinityGroupType(`${vm.metadata.namespace}/${name}`)),
          )
        : undefined,
    storage: {
      volumes: own.map((v) => needOf(v, deps.diskOffering, offering)),
      pools: poolUsages(
        zonePools,
        (pool) => deps.volumes.byIndex("pool", pool),
        deps.diskOffering,
        new Set(own.map(objectKey)),
      ),
      poolsByName: new Map(zonePools.map((p) => [p.metadata.name as string, p])),
    },
    // The moving VM does not bind itself: alone in a host affinity group, it may go anywhere.
    hosts: deps.hosts.list().map((h) => deps.usage.usageOf(h, vm ? objectKey(vm) : undefined)),
  };
}

/** Admitted, not final migrations per host (source or target): the cache plus this process's fresh admissions. */
export class MigrationSlots {
  private readonly assumed = new Map<string, { source: string; target: string }>();
  private readonly migrations: Informer<VirtualMachineMigration>;
  constructor(migrations: Informer<VirtualMachineMigration>) {
    this.migrations = migrations;
  }

  activeOn(host: string, except?: string): number {
    let count = 0;
    for (const m of this.migrations.list()) {
      const key = objectKey(m);
      const { sourceHost, targetHost, phase } = m.status ?? {};
      if (targetHost) this.assumed.delete(key); // the cache shows the admission now
      const active = targetHost && !isFinalMigrationPhase(phase);
      if (key !== except && active && (sourceHost === host || targetHost === host)) count++;
    }
    for (const [key, { source, target }] of this.assumed)
      if (key !== except && (source === host || target === host)) count++;
    return count;
  }

  assume(key: string, source: string, target: string): void {
    this.assumed.set(key, { source, target });
  }

  forget(key: string): void {
    this.assumed.delete(key);
  }
}

export function migrationController(deps: MigrationControllerDeps): Controller {
  const { client, migrations, vms } = deps;
  const slots = new MigrationSlots(migrations);
  const controller = new Controller({
    name: "migration",
    logger: deps.logger,
    metrics: deps.metrics,
    async reconcile(key, log) {
      if (key.startsWith(MAINTENANCE_KEY)) {
        await reconcileMaintenanceMigrations(deps, key.slice(MAINTENANCE_KEY.length), log);
        return undefined;
      }
      const migration = migrations.get(key);
      if (!migration) {
        slots.forget(key);
        return undefined;
      }
      const namespace = migration.metadata.namespace as string;
      const vm = vms.get(`${namespace}/${migration.spec.vm}`);
      const otherActive = migrations
        .byIndex("vm", `${namespace}/${migration.spec.vm}`)
        .find((m) => objectKey(m) !== key && m.status?.targetHost && !isFinalMigrationPhase(m.status.phase));
      const decision = decideMigration({
        migration,
        vm,
        ...(otherActive ? { otherActive: otherActive.metadata.name as string } : {}),
        ...migrationFacts(deps, vm),
        activeOn: (host) => slots.activeOn(host, key),
        maxPerHost: deps.maxPerHost,
        now: new Date(),
      });
      if (decision.finalizer === "add") {
        await addFinalizer(client, Resources.virtualMachineMigrations, migration, MIGRATION_FINALIZER).catch(
          notWrittenIfGone,
        );
        return undefined;
      }
      // transfer and targetPrepared are the agents' fields: compute's apply never names them.
      const { transfer: _transfer, targetPrepared: _prepared, ...status } = decision.status;
      const admits = status.phase === "Scheduling" && !migration.status?.targetHost;
      if (!statusSays(status, (migration.status ?? {}) as Record<string, unknown>)) {
        if (admits) slots.assume(key, status.sourceHost as string, status.targetHost as string);
        try {
          await client.apply(
            Resources.virtualMachineMigrations,
            {
              metadata: {
                name: migration.metadata.name as string,
                namespace,
                // The admission is decided once, on the version it was decided from.
                ...(admits ? { resourceVersion: migration.metadata.resourceVersion as string } : {}),
              },
              status,
            },
            { fieldManager: deps.fieldManager, subresource: "status" },
          );
        } catch (error) {
          if (admits) slots.forget(key);
          if (isConflict(error) || isNotFound(error)) return undefined;
          throw error;
        }
        log.info(
          { phase: status.phase, source: status.sourceHost, target: status.targetHost },
          status.message,
        );
        if (vm && status.phase !== migration.status?.phase && isFinalMigrationPhase(status.phase))
          await deps.events.record(Resources.virtualMachines, vm, {
            type: status.phase === "Succeeded" ? "Normal" : "Warning",
            reason: status.phase === "Succeeded" ? "Migrated" : `Migration${status.phase}`,
            action: "Migrate",
            note: status.message ?? "",
          });
      }
      if (decision.finalizer === "remove")
        await removeFinalizer(
          client,
          Resources.virtualMachineMigrations,
          migration,
          MIGRATION_FINALIZER,
        ).catch(notWrittenIfGone);
      return status.phase === "Pending" ? { requeueAfterMs: WAITING_RETRY_MS } : undefined;
    },
  });
  const waiting = () =>
    migrations
      .list()
      .filter((m) => !m.status?.targetHost && !isFinalMigrationPhase(m.status?.phase))
      .map(objectKey);
  controller
    // A migration that ends frees a slot for the waiting ones.
    .watch(migrations, (m) => [
      objectKey(m),
      ...waiting(),
      ...maintenanceOf(m.metadata.labels?.[EVACUATING_HOST_LABEL]),
    ])
    .watch(vms, (vm) => [
      ...migrations.byIndex("vm", objectKey(vm)).map(objectKey),
      ...maintenanceOf(vm.status?.host),
    ])
    .watch(deps.hosts, (host) => [...waiting(), ...maintenanceOf(host.metadata.name)], {
      specChangesOnly: true,
    });
  return controller;
}

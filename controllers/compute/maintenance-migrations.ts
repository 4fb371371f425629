// Maintenance moves running VMs live when it can: for each running VM on a host in maintenance
// whose volumes are all on shared pools, compute makes one VirtualMachineMigration named
// `evacuate-<vm uid>` (the name makes it once). The host's agent waits for it, and falls back to
// today's stop/move/start when it fails (evacuateLive in host-agent/migration-sync.ts). When the
// host leaves maintenance the finished ones go, so the next maintenance makes fresh ones.
import type { Logger } from "pino";
import {
  isFinalMigrationPhase,
  Resources,
  type VirtualMachine,
  type VirtualMachineMigration,
} from "../../crds/index.ts";
import { isAlreadyExists, isNotFound, objectKey } from "../../runtime/client.ts";
import { type MigrationControllerDeps, migrationFacts } from "./migration.ts";
import { refusal } from "./migration-decision.ts";

/** The label naming the host whose maintenance made a migration. */
export const EVACUATING_HOST_LABEL = "stratus.io/evacuating-host";
export const evacuationName = (vm: VirtualMachine) => `evacuate-${vm.metadata.uid}`;

/** What to do about one VM on a host in maintenance. Pure. */
export function evacuationStep(
  vm: VirtualMachine,
  existing: VirtualMachineMigration | undefined,
  otherActive: boolean,
  liveMigratable: boolean,
): "create" | "delete-stale" | "none" {
  if (vm.metadata.deletionTimestamp || vm.status?.state !== "Running" || !liveMigratable) return "none";
  // A success from an earlier maintenance: the VM came back since, so it moves again.
  if (existing?.status?.phase === "Succeeded") return "delete-stale";
  if (existing || otherActive) return "none";
  return "create";
}

export async function reconcileMaintenanceMigrations(
  deps: MigrationControllerDeps,
  hostName: string,
  log: Logger,
): Promise<void> {
  const { client, migrations } = deps;
  const host = deps.hosts.get(hostName);
  if (!host?.spec.maintenance) {
    for (const m of migrations.list())
      if (m.metadata.labels?.[EVACUATING_HOST_LABEL] === hostName && isFinalMigrationPhase(m.status?.phase))
        await remove(deps, m);
    return;
  }
  for (const vm of deps.vms.byIndex("host", hostName)) {
    const namespace = vm.metadata.namespace as string;
    const existing = migrations.get(`${namespace}/${evacuationName(vm)}`);
    const otherActive = migrations
      .byIndex("vm", objectKey(vm))
      .some((m) => m !== existing && !isFinalMigrationPhase(m.status?.phase));
    const { storage } = migrationFacts(deps, vm);
    const step = evacuationStep(vm, existing, otherActive, refusal({ vm, storage }) === undefined);
    if (step === "delete-stale" && existing) await remove(deps, existing);
    if (step !== "create") continue;
    try {
      await client.create<VirtualMachineMigration>(Resources.virtualMachineMigrations, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "VirtualMachineMigration",
        metadata: { name: evacuationName(vm), namespace, labels: { [EVACUATING_HOST_LABEL]: hostName } },
        spec: { vm: vm.metadata.name as string },
      });
      log.info({ vm: objectKey(vm), host: hostName }, "maintenance: moving a VM on shared storage live");
    } catch (error) {
      if (!isAlreadyExists(error)) throw error;
    }
  }
}

async function remove(deps: MigrationControllerDeps, m: VirtualMachineMigration): Promise<void> {
  await deps.client
    .delete(Resources.virtualMachineMigrations, m.metadata.name as string, m.metadata.namespace)
    .catch((error: unknown) => {
      if (!isNotFound(error)) throw error;
    });
}

// What the VM loop says of a VM's volumes: where each attached disk is (pool, path, size, device),
// and that volumes the VM no longer names are free again. One write per volume, only on change.
import { rootVolumeName, type VirtualMachine, type Volume } from "../crds/index.ts";
import { formatQuantity } from "../crds/quantity.ts";
import type { AgentWrites } from "./agent-writes.ts";
import type { Hypervisor, Owner } from "./hypervisor.ts";
import { dataDiskName, mayTakeDisk, type RunPlan } from "./planner.ts";
import type { VmSyncOptions } from "./vm-sync.ts";

interface VolumeReportOptions {
  owner: Owner;
  hypervisor: Hypervisor;
  writes: AgentWrites;
  storage: VmSyncOptions["storage"];
}

export class VolumeReports {
  private readonly o: VolumeReportOptions;

  constructor(options: VolumeReportOptions) {
    this.o = options;
  }

  /** The root disk (when this pass made or found it) and the data disks, attached at their devices. */
  async reportAttached(
    vm: VirtualMachine,
    plan: RunPlan,
    root: { path: string; capacityBytes: bigint } | undefined,
    volumes: Map<string, Volume>,
    targets: Map<string, string>,
  ): Promise<void> {
    const rootName = rootVolumeName(vm.metadata.name as string);
    if (root && plan.root)
      await this.report(
        vm,
        volumes.get(rootName),
        rootName,
        { ...root, pool: plan.root.pool },
        targets.get(root.path) ?? "vda",
      );
    for (const disk of plan.dataDisks) {
      const info = await this.o.hypervisor.disk(disk.pool, disk.name);
      if (info)
        await this.report(
          vm,
          disk.volume,
          disk.volume.metadata.name as string,
          { ...info, pool: disk.pool },
          targets.get(info.path) ?? "",
        );
    }
  }

  /** Volumes that say they are attached to the VM but are not in `keep` (or it is going) become Ready. */
  async detachUnlisted(vm: VirtualMachine, volumes: Map<string, Volume>, keep: ReadonlySet<string>) {
    const host = this.o.owner.host;
    for (const volume of volumes.values()) {
      const name = volume.metadata.name as string;
      if (
        volume.spec.type === "ROOT" ||
        keep.has(name) ||
        volume.status?.attachedTo?.virtualMachine !== vm.metadata.name
      )
        continue;
      const pool = volume.status?.pool;
      if (volume.status?.host !== host || !pool || this.o.storage.pathOf(pool) === undefined) continue;
      const info = await this.o.hypervisor.disk(pool, dataDiskName(volume.metadata.uid as string));
      if (info) await this.report(undefined, volume, name, { ...info, pool }, "");
    }
  }

  private async report(
    vm: VirtualMachine | undefined,
    cached: Volume | undefined,
    name: string,
    disk: { path: string; capacityBytes: bigint; pool: string },
    device: string,
  ) {
    const host = this.o.owner.host;
    // Another host's disk is this host's to report only once storage released it here (admission says so too).
    if (!mayTakeDisk(cached, host)) return "same" as const;
    const namespace = (vm?.metadata.namespace ?? cached?.metadata.namespace) as string;
    const poolType = this.o.storage.typeOf(disk.pool);
    return this.o.writes.volumeStatus({ namespace, name }, cached, {
      ...(cached ? { observedGeneration: cached.metadata.generation ?? 0 } : {}),
      phase: vm ? "Attached" : "Ready",
      host,
      pool: disk.pool,
      ...(poolType ? { poolType } : {}),
      path: disk.path,
      capacity: formatQuantity(disk.capacityBytes),
      ...(vm ? { attachedTo: { virtualMachine: vm.metadata.name as string, device } } : {}),
    });
  }
}

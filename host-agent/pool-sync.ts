// The StoragePools this host reaches: its own local pool and every shared pool of its zone. The
// agent prepares each on the hypervisor, tells the planner where a pool is (and where a new disk
// goes, by the one rule of crds/volume-placement.ts), and reports what it sees in its Host's
// status.storagePools, from which the storage controller rolls pool capacity up.
import type { Logger } from "pino";
import {
  type DiskOffering,
  type Host,
  localPoolName,
  type PoolType,
  Resources,
  type ServiceOffering,
  type StoragePool,
  type Volume,
} from "../crds/index.ts";
import { formatQuantity, parseQuantity } from "../crds/quantity.ts";
import { choosePools, reaches, volumeNeed } from "../crds/volume-placement.ts";
import type { KubeClient } from "../runtime/client.ts";
import { applyStatus } from "../runtime/objects.ts";
import type { Hypervisor, PoolReport } from "./hypervisor.ts";
import type { AgentStorage } from "./planner.ts";

/** The pool report has a field manager of its own: the agent's other Host status fields stay its registration's. */
export const POOL_REPORT_FIELD_MANAGER = "stratus-host-agent-pools";

/**
 * A pool's free space is reported again when it moved by more than this share of its capacity:
 * placement counts volume sizes, not free space, so the report is for people and need not be fresh.
 */
const REPORT_CHANGE = 0.1;

export interface PoolSyncOptions {
  host: string;
  client: KubeClient;
  hypervisor: Hypervisor;
  /** The zone's StoragePools (informer cache). */
  pools: () => readonly StoragePool[];
  /** This agent's Host (informer cache). */
  self: () => Host | undefined;
  /** Where the local pool's disks are on this host. */
  localPath: string;
  log: Logger;
}

export class PoolSync implements AgentStorage {
  private readonly o: PoolSyncOptions;
  private readonly reports = new Map<string, PoolReport>();

  constructor(options: PoolSyncOptions) {
    this.o = options;
  }

  pathOf(pool: string): string | undefined {
    const report = this.reports.get(pool);
    return report?.ready ? report.path : undefined;
  }

  typeOf(pool: string): PoolType | undefined {
    if (pool === localPoolName(this.o.host)) return "local";
    return this.o.pools().find((p) => p.metadata.name === pool)?.spec.type;
  }

  poolForNew(volume: Volume, offerings: { disk?: DiskOffering; service?: ServiceOffering }) {
    const host = this.hostWithReports();
    if (!host) return { reason: `host ${this.o.host} is not registered yet` };
    const usages = this.knownPools(host).map((pool) => ({
      pool,
      allocatedBytes: pool.status?.allocated ? parseQuantity(pool.status.allocated) : 0n,
    }));
    const need = volumeNeed(volume, offerings);
    const result = choosePools([need], host, usages);
    if ("reason" in result) return { reason: result.reason };
    return { pool: result.choices.get(need.volume)?.pool as string };
  }

  /**
   * The zone's pools; this host's local pool is there even before the storage controller has made
   * its object (a host has its own disks by definition).
   */
  private knownPools(host: Host): StoragePool[] {
    const pools = [...this.o.pools()];
    const local = localPoolName(this.o.host);
    if (!pools.some((p) => p.metadata.name === local))
      pools.push({
        apiVersion: "stratus.io/v1alpha1",
        kind: "StoragePool",
        metadata: { name: local },
        spec: { zone: host.spec.zone, type: "local", host: this.o.host },
      });
    return pools;
  }

  /**
   * Prepares every pool this host reaches and reports them when what it sees changed. True when
   * the set of pools usable here changed.
   */
  async sync(): Promise<boolean> {
    const before = [...this.reports.values()]
      .filter((r) => r.ready)
      .map((r) => r.name)
      .sort()
      .join();
    const self = this.o.self();
    const local = localPoolName(this.o.host);
    const specs = [
      { name: local, type: "local" as const, path: this.o.localPath },
      ...this.o
        .pools()
        .filter((pool) => pool.metadata.name !== local && self && reaches(pool, self))
        .map((pool) => ({
          name: pool.metadata.name as string,
          type: pool.spec.type,
          path: pool.spec.path as string,
          ...(pool.spec.nfs ? { nfs: pool.spec.nfs } : {}),
        })),
    ];
    const seen = new Set<string>();
    for (const spec of specs) {
      const report = await this.o.hypervisor.preparePool(spec);
      const before = this.reports.get(spec.name);
      if (before?.ready !== report.ready)
        this.o.log[report.ready ? "info" : "warn"](
          { pool: spec.name, path: report.path, why: report.message },
          report.ready ? "storage pool ready" : "storage pool not usable",
        );
      this.reports.set(spec.name, report);
      seen.add(spec.name);
    }
    for (const name of this.reports.keys()) if (!seen.has(name)) this.reports.delete(name);
    await this.report(self);
    return (
      before !==
      [...this.reports.values()]
        .filter((r) => r.ready)
        .map((r) => r.name)
        .sort()
        .join()
    );
  }

  private async report(self: Host | undefined): Promise<void> {
    if (!self) return;
    const reported = self.status?.storagePools ?? [];
    const changed =
      reported.length !== this.reports.size ||
      [...this.reports.values()].some((report) => {
        const old = reported.find((r) => r.name === report.name);
        return (
          !old ||
          old.ready !== report.ready ||
          old.path !== report.path ||
          old.message !== report.message ||
          moved(old.available, report.availableBytes, report.capacityBytes)
        );
      });
    if (!changed) return;
    await applyStatus(
      this.o.client,
      Resources.hosts,
      { metadata: { name: this.o.host } },
      { storagePools: [...this.reports.values()].map(asStatus) },
      POOL_REPORT_FIELD_MANAGER,
    );
  }

  /** The Host as the scheduler would see it once this agent's latest report is in. */
  private hostWithReports(): Host | undefined {
    const self = this.o.self();
    if (!self) return undefined;
    return { ...self, status: { ...self.status, storagePools: [...this.reports.values()].map(asStatus) } };
  }
}

function asStatus(report: PoolReport) {
  return {
    name: report.name,
    ready: report.ready,
    path: report.path,
    ...(report.capacityBytes !== undefined ? { capacity: formatQuantity(report.capacityBytes) } : {}),
    ...(report.availableBytes !== undefined ? { available: formatQuantity(report.availableBytes) } : {}),
    ...(report.message ? { message: report.message } : {}),
  };
}

function moved(old: string | undefined, now: bigint | undefined, capacity: bigint | undefined): boolean {
  if (old === undefined || now === undefined || !capacity) return old !== undefined || now !== undefined;
  const delta = parseQuantity(old) - now;
  const abs = delta < 0n ? -delta : delta;
  return Number(abs) > Number(capacity) * REPORT_CHANGE;
}

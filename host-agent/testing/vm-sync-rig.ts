// The VM loop's test rig: a VmSync on the fake hypervisor, its world in maps.
import pino from "pino";
import type { Template, VirtualMachine, Volume, VolumeSnapshot } from "../../crds/index.ts";
import { FakeHypervisor } from "../fake-hypervisor.ts";
import type { GuestDataSource } from "../guest-data.ts";
import { VmSync } from "../vm-sync.ts";
import { diskTemplate, hostStorage, network, OWNER, offering, rootVolume } from "./fixtures.ts";
import { MemoryWrites } from "./memory-writes.ts";

const log = pino({ level: "silent" });

/** The VM loop against the fake hypervisor, with the world in maps a test changes. */
export class VmSyncRig {
  readonly vms = new Map<string, VirtualMachine>();
  readonly volumes = new Map<string, Volume>();
  readonly hv = new FakeHypervisor(OWNER, "/pool");
  readonly writes = new MemoryWrites(this.vms);
  templates: Template[] = [diskTemplate];
  maintenance = false;
  storage = hostStorage("/pool");
  readonly snapshots = new Map<string, VolumeSnapshot>();
  readonly pausedForCopy = new Set<string>();
  clock = 0;
  zone: { name: string; secondaryPath?: string } = { name: "z1" };
  cache = "/cache";
  guestData: GuestDataSource | undefined;
  sync = this.newSync();

  newSync(): VmSync {
    return new VmSync({
      owner: OWNER,
      hypervisor: this.hv,
      writes: this.writes,
      domainType: () => "test",
      storage: this.storage,
      pausedForCopy: this.pausedForCopy,
      paths: { cache: this.cache, consoleSocket: (uid) => `/console/${uid}.sock` },
      shutdownGraceMs: 60_000,
      now: () => this.clock,
      ...(this.guestData ? { guestData: this.guestData } : {}),
      images: { download: async () => undefined, check: async () => ({ virtualSize: 2n ** 30n }) },
      world: {
        vm: (key) => this.vms.get(key),
        boundVms: () => [...this.vms.values()].filter((vm) => vm.status?.host === OWNER.host),
        offering: (name) => (name === offering.metadata.name ? offering : undefined),
        template: (name) => this.templates.find((t) => t.metadata.name === name),
        diskOffering: () => undefined,
        inMaintenance: () => this.maintenance,
        storageLimited: () => false,
        zone: () => this.zone,
        volumes: async (vm) => {
          // Each Volume as the API server would show it: with what this agent last wrote of its status
          // over the other writers' fields (the storage controller's grant).
          const found = new Map(
            [...this.volumes.values()].map((v) => {
              const written = this.writes.volumeStatuses.get(`${v.metadata.namespace}/${v.metadata.name}`);
              return [
                v.metadata.name as string,
                written ? ({ ...v, status: { ...v.status, ...written } } as Volume) : v,
              ];
            }),
          );
          // The root Volume the orchestration made, with what this agent last wrote of its status.
          const root = rootVolume(vm);
          const written = this.writes.volumeStatuses.get(`${vm.metadata.namespace}/${root.metadata.name}`);
          if (!found.has(root.metadata.name as string))
            found.set(
              root.metadata.name as string,
              written ? rootVolume(vm, written as Volume["status"]) : root,
            );
          return found;
        },
        networks: async () => new Map([[network.metadata.name as string, network]]),
        snapshot: async (_namespace, name) => this.snapshots.get(name),
      },
    });
  }

  put(vm: VirtualMachine): string {
    const key = `${vm.metadata.namespace}/${vm.metadata.name}`;
    this.vms.set(key, vm);
    return key;
  }

  vm(key: string): VirtualMachine {
    return this.vms.get(key) as VirtualMachine;
  }

  /** Deletes the VM as the API server does while its domain finalizer holds it. */
  markDeleted(key: string): void {
    const vm = this.vm(key);
    this.put({
      ...vm,
      metadata: {
        ...vm.metadata,
        deletionTimestamp: "2026-11-30T00:00:00Z",
        finalizers: ["stratus.io/domain"],
      },
    });
  }

  /** Changes the VM's spec as a user would (a new generation the orchestration has vetted). */
  edit(key: string, spec: Partial<VirtualMachine["spec"]>): void {
    const vm = this.vm(key);
    const generation = (vm.metadata.generation ?? 1) + 1;
    this.vms.set(key, {
      ...vm,
      metadata: { ...vm.metadata, generation },
      spec: { ...vm.spec, ...spec },
      status: {
        ...vm.status,
        conditions: (vm.status?.conditions ?? []).map((c) =>
          c.type === "Ready" ? c : { ...c, observedGeneration: generation },
        ),
      },
    });
  }

  async run(key: string, rounds = 1) {
    let result: Awaited<ReturnType<VmSync["sync"]>>;
    for (let i = 0; i < rounds; i++) result = await this.sync.sync(key, this.vm(key)?.metadata.uid, log);
    // biome-ignore lint/style/noNonNullAssertion: assigned in the loop (rounds >= 1)
    return result!;
  }
}

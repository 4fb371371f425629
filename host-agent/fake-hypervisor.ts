// An in-memory Hypervisor for unit tests of the reconcile loop: state-based (domains, disks,
// networks you can inspect), with the behaviours tests need to provoke: a guest that ignores
// ACPI, a driver without hot plug, a daemon that goes away, a full pool. Disks are files in a
// FakeFiles "file system" that several fakes may share: a shared pool or secondary storage is the
// same path seen from two hosts, a local pool a path only one of them has.
import { createHash } from "node:crypto";
import { localPoolName } from "../crds/index.ts";
import { formatQuantity } from "../crds/quantity.ts";
import type { DomainSpec } from "./domain-xml.ts";
import { diskTarget } from "./domain-xml.ts";
import type {
  DhcpReservation,
  DiskInfo,
  DiskRequest,
  HostFacts,
  Hypervisor,
  MigrationProgress,
  MigrationTarget,
  ObservedDomain,
  Owner,
  PoolReport,
  PoolSpec,
  StagedDisk,
} from "./hypervisor.ts";
import { LibvirtError } from "./libvirt/connection.ts";
import { type NetworkSpec, networkPrefix } from "./network-xml.ts";
import { HostProblem } from "./problem.ts";

/** Files by path, with a capacity and a content that stands for the bytes a guest wrote. */
export class FakeFiles {
  readonly files = new Map<string, { capacityBytes: bigint; content: string }>();
}

const sha256 = (content: string) => createHash("sha256").update(content).digest("hex");

interface FakeDomain extends ObservedDomain {
  spec: Omit<DomainSpec, "owner">;
}

export class FakeHypervisor implements Hypervisor {
  readonly uri = "fake:///";
  readonly disksPersist = true;
  readonly owner: Owner;
  readonly domains = new Map<string, FakeDomain>();
  readonly files: FakeFiles;
  /** The pools this fake reaches, by StoragePool name. */
  readonly pools = new Map<string, PoolSpec>();
  readonly networks = new Map<string, { spec: NetworkSpec; reservations: DhcpReservation[] }>();
  /** What a test can change. */
  settings = {
    guestIgnoresShutdown: false,
    hotPlug: true,
    alive: true,
    poolBytes: 100n * 2n ** 30n,
    /** Pools (by name) whose mount is missing on this host. */
    unmounted: new Set<string>(),
    /** Corrupts the next import's copy, as a bad transfer would. */
    corruptNextImport: false,
  };
  /** Other fakes by URI, that this one can live-migrate guests to (none: it refuses, as libvirt's test driver). */
  readonly peers = new Map<string, FakeHypervisor>();
  /** Every mutating call, in order: lets a test see what the loop did (and did not) do. */
  readonly calls: string[] = [];
  private readonly listeners: ((vmUid: string) => void)[] = [];

  constructor(owner: Owner, poolPath = "/fake/pool", files = new FakeFiles()) {
    this.owner = owner;
    this.files = files;
    this.pools.set(localPoolName(owner.host), {
      name: localPoolName(owner.host),
      type: "local",
      path: poolPath,
    });
  }

  /** The disks in this host's pools by name (what a test asks "is it here?"). */
  get disks(): Map<string, DiskInfo> {
    const found = new Map<string, DiskInfo>();
    for (const pool of this.pools.values())
      for (const [path, file] of this.files.files)
        if (path.startsWith(`${pool.path}/`)) {
          const name = path.slice(pool.path.length + 1);
          found.set(name, { name, path, capacityBytes: file.capacityBytes });
        }
    return found;
  }

  /** What a guest wrote to a disk (tests write and read the "bytes"). */
  content(path: string): string | undefined {
    return this.files.files.get(path)?.content;
  }

  write(path: string, content: string): void {
    const file = this.files.files.get(path);
    if (!file) throw new Error(`no disk at ${path}`);
    file.content = content;
  }

  async preparePool(pool: PoolSpec): Promise<PoolReport> {
    this.check();
    this.pools.set(pool.name, pool);
    if (this.settings.unmounted.has(pool.name))
      return { name: pool.name, ready: false, path: pool.path, message: `${pool.path} is not mounted` };
    return {
      name: pool.name,
      ready: true,
      path: pool.path,
      capacityBytes: this.settings.poolBytes,
      availableBytes: this.settings.poolBytes - this.usedBytes(pool.path),
    };
  }

  private usedBytes(poolPath: string): bigint {
    let used = 0n;
    for (const [path, file] of this.files.files)
      if (path.startsWith(`${poolPath}/`)) used += file.capacityBytes;
    return used;
  }

  private poolPath(pool: string): string {
    const spec = this.pools.get(pool);
    if (!spec || this.settings.unmounted.has(pool))
      throw new LibvirtError(`lookup pool ${pool}`, "Storage pool not found", 49);
    return spec.path;
  }

  async prepare(): Promise<HostFacts> {
    this.check();
    return {
      cpus: 8,
      memoryBytes: 16 * 2 ** 30,
      storageBytes: this.settings.poolBytes,
      type: "Simulator",
      domainType: "test",
      version: "1.0.0",
      libvirtVersion: "9.0.0",
      uri: this.uri,
    };
  }

  async ensureConnected(): Promise<void> {
    this.check();
  }

  isAlive(): boolean {
    return this.settings.alive;
  }

  async onDomainEvent(listener: (vmUid: string) => void): Promise<void> {
    this.listeners.push(listener);
  }

  /** A domain of another agent, or left by an older one, placed on this fake "daemon". */
  plant(domain: FakeDomain): void {
    this.domains.set(domain.vmUid, domain);
  }

  async listDomains(): Promise<ObservedDomain[]> {
    this.check();
    return [...this.domains.values()].map(observed);
  }

  async otherDomains(): Promise<{ name: string; state: string }[]> {
    return [];
  }

  async observe(vmUid: string): Promise<ObservedDomain | undefined> {
    this.check();
    const domain = this.domains.get(vmUid);
    return domain ? observed(domain) : undefined;
  }

  async define(spec: Omit<DomainSpec, "owner">): Promise<ObservedDomain> {
    this.record(`define ${spec.vm.uid}`);
    const previous = this.domains.get(spec.vm.uid);
    const domain: FakeDomain = {
      vmUid: spec.vm.uid,
      uuid: spec.vm.uid,
      state: previous?.state ?? "shutoff",
      ...(previous?.shutoffReason ? { shutoffReason: previous.shutoffReason } : {}),
      owner: this.owner,
      vm: { namespace: spec.vm.namespace, name: spec.vm.name },
      disks: spec.disks.map((d, i) => ({ path: d.path, target: diskTarget(i) })),
      ...(spec.iso ? { iso: spec.iso } : {}),
      spec,
    };
    this.domains.set(spec.vm.uid, domain);
    this.emit(spec.vm.uid);
    return observed(domain);
  }

  async start(vmUid: string): Promise<void> {
    this.record(`start ${vmUid}`);
    this.set(vmUid, "running");
  }

  async requestShutdown(vmUid: string): Promise<void> {
    this.record(`shutdown ${vmUid}`);
    if (!this.settings.guestIgnoresShutdown) this.set(vmUid, "shutoff", "shutdown");
  }

  async powerOff(vmUid: string): Promise<void> {
    this.record(`poweroff ${vmUid}`);
    this.set(vmUid, "shutoff", "destroyed");
  }

  async pause(vmUid: string): Promise<void> {
    this.record(`pause ${vmUid}`);
    this.set(vmUid, "paused");
  }

  async resume(vmUid: string): Promise<void> {
    this.record(`resume ${vmUid}`);
    this.set(vmUid, "running");
  }

  /** The guest powers itself off (or crashes), as a libvirt event would report. */
  guestStops(vmUid: string, reason: "shutdown" | "crashed" = "shutdown"): void {
    this.set(vmUid, "shutoff", reason);
  }

  async migrate(vmUid: string, target: MigrationTarget): Promise<{ downtimeMs?: number }> {
    this.record(`migrate ${vmUid} ${target.uri}`);
    const peer = this.peers.get(target.uri);
    if (!peer)
      throw new HostProblem("MigrationUnsupported", `Host ${this.owner.host} cannot live-migrate guests.`);
    const domain = this.domains.get(vmUid);
    if (domain?.state !== "running") throw new LibvirtError("migrate", "domain is not running", 55);
    // It arrives with the source's mark (the target adopts it once bound there) and leaves nothing here.
    peer.domains.set(vmUid, { ...domain });
    this.domains.delete(vmUid);
    return { downtimeMs: 0 };
  }

  async migrationProgress(_vmUid: string): Promise<MigrationProgress | undefined> {
    return undefined;
  }

  async abortMigration(vmUid: string): Promise<void> {
    this.record(`abortMigration ${vmUid}`);
  }

  async remoteDomainState(uri: string, vmUid: string) {
    return this.peers.get(uri)?.domains.get(vmUid)?.state;
  }

  async adopt(vmUid: string): Promise<ObservedDomain | undefined> {
    const domain = this.domains.get(vmUid);
    if (domain) domain.owner = { ...this.owner };
    this.record(`adopt ${vmUid}`);
    return this.observe(vmUid);
  }

  async undefine(vmUid: string): Promise<void> {
    this.record(`undefine ${vmUid}`);
    this.domains.delete(vmUid);
    this.emit(vmUid);
  }

  async attachDisk(vmUid: string, disk: DomainSpec["disks"][number], target: string, live: boolean) {
    this.hotPlug("attach", live);
    this.record(`attach ${vmUid} ${disk.path} ${target}`);
    this.domain(vmUid).disks.push({ path: disk.path, target });
  }

  async detachDisk(vmUid: string, path: string, target: string, live: boolean) {
    this.hotPlug("detach", live);
    this.record(`detach ${vmUid} ${path} ${target}`);
    const domain = this.domain(vmUid);
    domain.disks = domain.disks.filter((d) => d.path !== path);
  }

  async changeIso(vmUid: string, path: string | undefined) {
    this.record(`iso ${vmUid} ${path ?? "ejected"}`);
    const domain = this.domain(vmUid);
    if (path) domain.iso = path;
    else delete domain.iso;
  }

  async liveDiskBytes(vmUid: string, target: string): Promise<bigint> {
    const path = this.domain(vmUid).disks.find((d) => d.target === target)?.path;
    return (path ? this.files.files.get(path)?.capacityBytes : undefined) ?? 0n;
  }

  async growLiveDisk(vmUid: string, target: string, bytes: bigint): Promise<void> {
    this.record(`grow ${vmUid} ${target} ${bytes}`);
    const path = this.domain(vmUid).disks.find((d) => d.target === target)?.path;
    const file = path ? this.files.files.get(path) : undefined;
    if (file) file.capacityBytes = bytes;
  }

  async ensureDisk(request: DiskRequest): Promise<DiskInfo> {
    this.check();
    const poolPath = this.poolPath(request.pool);
    const path = `${poolPath}/${request.name}`;
    const existing = this.files.files.get(path);
    if (existing) {
      if (request.grow && existing.capacityBytes < request.capacityBytes) {
        this.record(`resize ${request.name} ${request.capacityBytes}`);
        existing.capacityBytes = request.capacityBytes;
      }
      return { name: request.name, path, capacityBytes: existing.capacityBytes };
    }
    const free = this.settings.poolBytes - this.usedBytes(poolPath);
    if (request.capacityBytes > free)
      throw new HostProblem(
        "InsufficientStorage",
        `${request.what}: pool has ${formatQuantity(free)} free, needs ${formatQuantity(request.capacityBytes)}.`,
      );
    this.record(`create disk ${request.name}`);
    this.files.files.set(path, { capacityBytes: request.capacityBytes, content: "" });
    return { name: request.name, path, capacityBytes: request.capacityBytes };
  }

  async disk(pool: string, name: string): Promise<DiskInfo | undefined> {
    const path = `${this.poolPath(pool)}/${name}`;
    const file = this.files.files.get(path);
    return file ? { name, path, capacityBytes: file.capacityBytes } : undefined;
  }

  async deleteDisk(pool: string, name: string): Promise<void> {
    this.check();
    if (this.files.files.delete(`${this.poolPath(pool)}/${name}`)) this.record(`delete disk ${name}`);
  }

  async exportDisk(
    pool: string,
    name: string,
    stagingPath: string,
    options: { pausedDomain?: boolean } = {},
  ): Promise<StagedDisk> {
    this.check();
    const path = `${this.poolPath(pool)}/${name}`;
    const file = this.files.files.get(path);
    if (!file) throw new LibvirtError(`export ${pool}/${name}`, "Storage volume not found", 50);
    // As qemu-img's image lock: a disk a running guest holds is not read (a paused one only when asked).
    const holder = [...this.domains.values()].find(
      (d) => d.state !== "shutoff" && d.disks.some((x) => x.path === path),
    );
    if (holder && !(options.pausedDomain && holder.state === "paused"))
      throw new HostProblem("ExportFailed", `copying ${path} out failed: Failed to get shared "write" lock`);
    this.record(`export ${name}`);
    this.files.files.set(stagingPath, { ...file });
    return { path: stagingPath, sha256: sha256(file.content), bytes: file.content.length };
  }

  async importDisk(pool: string, name: string, staged: StagedDisk): Promise<DiskInfo> {
    this.check();
    const source = this.files.files.get(staged.path);
    if (!source) throw new HostProblem("StagedCopyMissing", `the staged copy ${staged.path} is gone`);
    const content = this.settings.corruptNextImport ? `${source.content}!` : source.content;
    this.settings.corruptNextImport = false;
    if (sha256(content) !== staged.sha256)
      throw new HostProblem("ChecksumMismatch", `the copy of ${name} does not hash to ${staged.sha256}`);
    this.record(`import ${name}`);
    const path = `${this.poolPath(pool)}/${name}`;
    this.files.files.set(path, { capacityBytes: source.capacityBytes, content });
    return { name, path, capacityBytes: source.capacityBytes };
  }

  async removeStaged(stagingPath: string): Promise<void> {
    if (this.files.files.delete(stagingPath)) this.record(`remove staged ${stagingPath}`);
  }

  async syncNetwork(network: NetworkSpec, reservations: readonly DhcpReservation[]): Promise<void> {
    this.check();
    this.networks.set(network.name, { spec: network, reservations: [...reservations] });
  }

  async ownNetworks(): Promise<string[]> {
    return [...this.networks.keys()].filter((n) => n.startsWith(networkPrefix(this.owner)));
  }

  async networkReservations(name: string): Promise<DhcpReservation[]> {
    return [...(this.networks.get(name)?.reservations ?? [])];
  }

  async removeNetwork(name: string): Promise<void> {
    if (this.networks.delete(name)) this.record(`remove network ${name}`);
  }

  async removePools(): Promise<void> {}

  async close(): Promise<void> {}

  private check(): void {
    if (!this.settings.alive)
      throw new LibvirtError("call", "the libvirt daemon does not answer (is libvirtd running?)", 0);
  }

  private record(call: string): void {
    this.check();
    this.calls.push(call);
  }

  private domain(vmUid: string): FakeDomain {
    const domain = this.domains.get(vmUid);
    if (!domain) throw new LibvirtError(`lookup domain stratus-${vmUid}`, "Domain not found", 42);
    return domain;
  }

  private set(vmUid: string, state: FakeDomain["state"], reason?: FakeDomain["shutoffReason"]): void {
    const domain = this.domain(vmUid);
    domain.state = state;
    if (reason) domain.shutoffReason = reason;
    else delete domain.shutoffReason;
    this.emit(vmUid);
  }

  private hotPlug(change: string, live: boolean): void {
    if (live && !this.settings.hotPlug)
      throw new HostProblem(
        "HotPlugUnsupported",
        `The hypervisor cannot ${change} disks; stop and start the VM.`,
      );
  }

  private emit(vmUid: string): void {
    for (const listener of this.listeners) listener(vmUid);
  }
}

function observed(domain: FakeDomain): ObservedDomain {
  const { spec, ...rest } = domain;
  return {
    ...rest,
    disks: domain.disks.map((d) => ({ ...d })),
    ...(spec.configDrive ? { configDrive: spec.configDrive } : {}),
  };
}

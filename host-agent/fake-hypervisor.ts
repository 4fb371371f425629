// An in-memory Hypervisor for unit tests of the reconcile loop: state-based (domains, disks,
// networks you can inspect), with the behaviours tests need to provoke: a guest that ignores
// ACPI, a driver without hot plug, a daemon that goes away, a full pool.
import { formatQuantity } from "../crds/quantity.ts";
import type { DomainSpec } from "./domain-xml.ts";
import { diskTarget } from "./domain-xml.ts";
import type {
  DhcpReservation,
  DiskInfo,
  DiskRequest,
  HostFacts,
  Hypervisor,
  ObservedDomain,
  Owner,
} from "./hypervisor.ts";
import { LibvirtError } from "./libvirt/connection.ts";
import { type NetworkSpec, networkPrefix } from "./network-xml.ts";
import { HostProblem } from "./problem.ts";

interface FakeDomain extends ObservedDomain {
  spec: Omit<DomainSpec, "owner">;
}

export class FakeHypervisor implements Hypervisor {
  readonly uri = "fake:///";
  readonly pool = "fake-pool";
  readonly owner: Owner;
  readonly domains = new Map<string, FakeDomain>();
  readonly disks = new Map<string, DiskInfo>();
  readonly networks = new Map<string, { spec: NetworkSpec; reservations: DhcpReservation[] }>();
  /** What a test can change. */
  settings = { guestIgnoresShutdown: false, hotPlug: true, alive: true, poolBytes: 100n * 2n ** 30n };
  /** Every mutating call, in order: lets a test see what the loop did (and did not) do. */
  readonly calls: string[] = [];
  private readonly listeners: ((vmUid: string) => void)[] = [];

  private readonly poolPath: string;

  constructor(owner: Owner, poolPath = "/fake/pool") {
    this.owner = owner;
    this.poolPath = poolPath;
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

  /** The guest powers itself off (or crashes), as a libvirt event would report. */
  guestStops(vmUid: string, reason: "shutdown" | "crashed" = "shutdown"): void {
    this.set(vmUid, "shutoff", reason);
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

  async liveDiskBytes(vmUid: string, target: string): Promise<bigint> {
    const path = this.domain(vmUid).disks.find((d) => d.target === target)?.path;
    return [...this.disks.values()].find((d) => d.path === path)?.capacityBytes ?? 0n;
  }

  async growLiveDisk(vmUid: string, target: string, bytes: bigint): Promise<void> {
    this.record(`grow ${vmUid} ${target} ${bytes}`);
    const path = this.domain(vmUid).disks.find((d) => d.target === target)?.path;
    for (const disk of this.disks.values()) if (disk.path === path) disk.capacityBytes = bytes;
  }

  async ensureDisk(request: DiskRequest): Promise<DiskInfo> {
    this.check();
    const existing = this.disks.get(request.name);
    if (existing) {
      if (request.grow && existing.capacityBytes < request.capacityBytes) {
        this.record(`resize ${request.name} ${request.capacityBytes}`);
        existing.capacityBytes = request.capacityBytes;
      }
      return { ...existing };
    }
    const used = [...this.disks.values()].reduce((sum, d) => sum + d.capacityBytes, 0n);
    const free = this.settings.poolBytes - used;
    if (request.capacityBytes > free)
      throw new HostProblem(
        "InsufficientStorage",
        `${request.what}: pool has ${formatQuantity(free)} free, needs ${formatQuantity(request.capacityBytes)}.`,
      );
    this.record(`create disk ${request.name}`);
    const disk = {
      name: request.name,
      path: `${this.poolPath}/${request.name}`,
      capacityBytes: request.capacityBytes,
    };
    this.disks.set(request.name, disk);
    return { ...disk };
  }

  async disk(name: string): Promise<DiskInfo | undefined> {
    const disk = this.disks.get(name);
    return disk ? { ...disk } : undefined;
  }

  async deleteDisk(name: string): Promise<void> {
    this.check();
    if (this.disks.delete(name)) this.record(`delete disk ${name}`);
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

  async removePool(): Promise<void> {}

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
  const { spec: _spec, ...rest } = domain;
  return { ...rest, disks: domain.disks.map((d) => ({ ...d })) };
}

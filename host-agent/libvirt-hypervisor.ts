// The Hypervisor seam over libvirt: domains named stratus-<VM UID> and marked with the defining
// agent's owner in their metadata, disks in the agent's own directory pool, and one libvirt
// network per Stratus Network with a DHCP reservation per NIC.
import { formatQuantity } from "../crds/quantity.ts";
import { buildDomainXml, disksIn, diskXml, domainMetadataIn, domainName, vmUidOf } from "./domain-xml.ts";
import type {
  DhcpReservation,
  DiskInfo,
  DiskRequest,
  HostFacts,
  Hypervisor,
  ObservedDomain,
  Owner,
} from "./hypervisor.ts";
import {
  type DomainInfo,
  type LibvirtConnection,
  LibvirtError,
  VIR_ERR_NO_SUPPORT,
} from "./libvirt/connection.ts";
import {
  buildNetworkXml,
  dhcpHostsIn,
  dhcpHostXml,
  type NetworkSpec,
  networkPrefix,
  ownerTag,
  reservationChanges,
  STRATUS_PREFIX,
} from "./network-xml.ts";
import { HostProblem } from "./problem.ts";

/** The directory pool an agent keeps its disks in: one per cluster and host. */
export function poolName(owner: Owner): string {
  return `${STRATUS_PREFIX}${ownerTag(owner)}`;
}

/** What a guest CPU needs for today's distribution kernels (x86-64-v2: RHEL 9, Ubuntu, Debian's). */
const BASELINE_CPU_FEATURES = ["pni", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16"];

/**
 * Whether KVM from libvirt's domain capabilities (for virttype kvm) can run real guests: KVM is
 * offered and the CPU it can give guests keeps the x86-64-v2 baseline. A nested KVM that hides SSE3
 * and friends starts QEMU, but Linux guests hang before printing a line (seen on these machines).
 */
export function kvmUsability(domainCapabilitiesXml: string | undefined): { usable: boolean; reason: string } {
  if (!domainCapabilitiesXml || !/<domain>kvm<\/domain>/.test(domainCapabilitiesXml))
    return { usable: false, reason: "libvirt offers no KVM on this host" };
  const hostModel =
    /<mode name='host-model' supported='yes'>([\s\S]*?)<\/mode>/.exec(domainCapabilitiesXml)?.[1] ?? "";
  const missing = BASELINE_CPU_FEATURES.filter((feature) =>
    new RegExp(`<feature policy='disable' name='${feature.replace(".", "\\.")}'/>`).test(hostModel),
  );
  return missing.length === 0
    ? { usable: true, reason: "libvirt offers KVM with a full guest CPU" }
    : {
        usable: false,
        reason: `KVM here cannot give guests ${missing.join(", ")} (a limited nested KVM); using emulation`,
      };
}

export type Accelerator = "auto" | "kvm" | "tcg";

export class LibvirtHypervisor implements Hypervisor {
  private readonly libvirt: LibvirtConnection;
  private readonly owner: Owner;
  private readonly poolPath: string;
  readonly pool: string;

  private readonly accelerator: Accelerator;

  constructor(
    libvirt: LibvirtConnection,
    options: { owner: Owner; poolPath: string; accelerator?: Accelerator },
  ) {
    this.libvirt = libvirt;
    this.accelerator = options.accelerator ?? "auto";
    this.owner = options.owner;
    this.poolPath = options.poolPath;
    this.pool = poolName(options.owner);
  }

  get uri(): string {
    return this.libvirt.uri;
  }

  async prepare(): Promise<HostFacts> {
    const [node, versions, pool] = await Promise.all([
      this.libvirt.nodeInfo(),
      this.libvirt.versions(),
      this.libvirt.ensureDirectoryPool(this.pool, this.poolPath),
    ]);
    const simulated = versions.type === "TEST";
    const kvm = !simulated && (await this.useKvm());
    return {
      cpus: node.cpus,
      memoryBytes: node.memoryBytes,
      storageBytes: pool.capacityBytes,
      type: simulated ? "Simulator" : kvm ? "KVM" : "QEMU",
      domainType: simulated ? "test" : kvm ? "kvm" : "qemu",
      version: versions.hypervisor,
      libvirtVersion: versions.libvirt,
      uri: this.libvirt.uri,
    };
  }

  /** KVM when it can run guests here (or when forced), emulation (TCG) otherwise. */
  private async useKvm(): Promise<boolean> {
    if (this.accelerator !== "auto") return this.accelerator === "kvm";
    const capabilities = await this.libvirt.domainCapabilities("kvm").catch(() => undefined);
    const { usable, reason } = kvmUsability(capabilities);
    this.facts.push(reason);
    return usable;
  }

  /** What the agent learnt about the host while preparing it (logged once). */
  readonly facts: string[] = [];

  ensureConnected(): Promise<void> {
    return this.libvirt.ensureConnected();
  }

  isAlive(): boolean {
    return this.libvirt.isAlive();
  }

  async onDomainEvent(listener: (vmUid: string) => void): Promise<void> {
    await this.libvirt.onDomainEvent((name) => {
      const uid = vmUidOf(name);
      if (uid) listener(uid);
    });
  }

  async listDomains(): Promise<ObservedDomain[]> {
    const domains = (await this.libvirt.listDomains()).filter((d) => vmUidOf(d.name) !== undefined);
    return Promise.all(domains.map((d) => this.describe(d)));
  }

  async otherDomains(): Promise<{ name: string; state: string }[]> {
    return (await this.libvirt.listDomains())
      .filter((d) => vmUidOf(d.name) === undefined)
      .map(({ name, state }) => ({ name, state }));
  }

  async observe(vmUid: string): Promise<ObservedDomain | undefined> {
    const domain = await this.libvirt.domain(domainName(vmUid));
    return domain ? this.describe(domain) : undefined;
  }

  async define(spec: Parameters<Hypervisor["define"]>[0]): Promise<ObservedDomain> {
    return this.describe(await this.libvirt.defineDomain(buildDomainXml({ ...spec, owner: this.owner })));
  }

  async start(vmUid: string): Promise<void> {
    await this.libvirt.startDomain(domainName(vmUid));
  }

  async requestShutdown(vmUid: string): Promise<void> {
    await this.libvirt.shutdownDomain(domainName(vmUid));
  }

  async powerOff(vmUid: string): Promise<void> {
    await this.libvirt.destroyDomain(domainName(vmUid));
  }

  async undefine(vmUid: string): Promise<void> {
    await this.libvirt.undefineDomain(domainName(vmUid));
  }

  attachDisk(vmUid: string, disk: Parameters<Hypervisor["attachDisk"]>[1], target: string, live: boolean) {
    return this.changeDevices("attach", () =>
      this.libvirt.attachDevice(domainName(vmUid), diskXml(disk, target), live),
    );
  }

  detachDisk(vmUid: string, path: string, target: string, live: boolean) {
    const xml = diskXml({ path, format: "qcow2", serial: "" }, target);
    return this.changeDevices("detach", () => this.libvirt.detachDevice(domainName(vmUid), xml, live));
  }

  liveDiskBytes(vmUid: string, target: string): Promise<bigint> {
    return this.libvirt.blockCapacity(domainName(vmUid), target);
  }

  async growLiveDisk(vmUid: string, target: string, bytes: bigint): Promise<void> {
    await this.libvirt.resizeBlockDevice(domainName(vmUid), target, bytes);
  }

  async ensureDisk(request: DiskRequest): Promise<DiskInfo> {
    const existing = await this.libvirt.volume(this.pool, request.name);
    if (existing && request.grow && existing.capacityBytes < request.capacityBytes)
      return this.libvirt.resizeVolume(this.pool, request.name, request.capacityBytes);
    if (existing) return existing;
    const { availableBytes } = await this.libvirt.poolInfo(this.pool);
    if (request.capacityBytes > availableBytes)
      throw new HostProblem(
        "InsufficientStorage",
        `${request.what}: pool ${this.pool} on host ${this.owner.host} has ${formatQuantity(availableBytes)} free, needs ${formatQuantity(request.capacityBytes)}.`,
      );
    return this.libvirt.createVolume(this.pool, {
      name: request.name,
      capacityBytes: request.capacityBytes,
      ...(request.backing
        ? { backingPath: request.backing.path, backingFormat: request.backing.format }
        : {}),
    });
  }

  disk(name: string): Promise<DiskInfo | undefined> {
    return this.libvirt.volume(this.pool, name);
  }

  deleteDisk(name: string): Promise<void> {
    return this.libvirt.deleteVolume(this.pool, name);
  }

  async syncNetwork(network: NetworkSpec, reservations: readonly DhcpReservation[]): Promise<void> {
    await this.libvirt.ensureNetwork(network.name, buildNetworkXml(network, reservations));
    if (!network.ip || !network.dhcp) return;
    const changes = reservationChanges(await this.networkReservations(network.name), reservations);
    for (const stale of changes.remove)
      await this.libvirt.updateDhcpHost(network.name, "delete", dhcpHostXml(stale));
    for (const missing of changes.add)
      await this.libvirt.updateDhcpHost(network.name, "add", dhcpHostXml(missing));
  }

  async ownNetworks(): Promise<string[]> {
    const prefix = networkPrefix(this.owner);
    return (await this.libvirt.listNetworks()).filter((name) => name.startsWith(prefix));
  }

  async networkReservations(name: string): Promise<DhcpReservation[]> {
    return dhcpHostsIn((await this.libvirt.networkXml(name)) ?? "");
  }

  removeNetwork(name: string): Promise<void> {
    return this.libvirt.deleteNetwork(name);
  }

  removePool(): Promise<void> {
    return this.libvirt.deletePool(this.pool);
  }

  close(): Promise<void> {
    return this.libvirt.close();
  }

  private async describe(domain: DomainInfo): Promise<ObservedDomain> {
    const xml = await this.libvirt.domainXml(domain.name);
    const { owner, vm } = domainMetadataIn(xml);
    return {
      vmUid: vmUidOf(domain.name) as string,
      uuid: domain.uuid,
      state: domain.state,
      ...(domain.shutoffReason ? { shutoffReason: domain.shutoffReason } : {}),
      ...(owner ? { owner } : {}),
      ...(vm ? { vm } : {}),
      disks: disksIn(xml),
    };
  }

  /** A driver that cannot hot plug (the test driver) says so as a problem the user can act on. */
  private async changeDevices(change: "attach" | "detach", work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (error) {
      if (error instanceof LibvirtError && error.code === VIR_ERR_NO_SUPPORT)
        throw new HostProblem(
          "HotPlugUnsupported",
          `The hypervisor of host ${this.owner.host} cannot ${change} disks; stop and start the VM to apply the change.`,
        );
      throw error;
    }
  }
}

// The Hypervisor seam over libvirt: domains named stratus-<VM UID> and marked with the defining
// agent's owner in their metadata, disks in libvirt storage pools (the agent's own directory pool
// for its local StoragePool, one per shared StoragePool), and one libvirt network per Stratus
// Network with a DHCP reservation per NIC.
import { createHash } from "node:crypto";
import { readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { localPoolName } from "../crds/index.ts";
import { formatQuantity } from "../crds/quantity.ts";
import { copyVerified, flattenTo, readDescriptor, stageDescriptor } from "./disk-files.ts";
import {
  buildDomainXml,
  cdromXml,
  configDriveIn,
  disksIn,
  diskXml,
  domainMetadataIn,
  domainName,
  hasCdrom,
  ISO_DRIVE_TARGET,
  isoIn,
  METADATA_NAMESPACE,
  vmUidOf,
} from "./domain-xml.ts";
import { refuseHostOverlap } from "./host-overlap.ts";
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
import {
  type DomainInfo,
  LibvirtConnection,
  LibvirtError,
  VIR_ERR_NO_DOMAIN,
  VIR_ERR_NO_SUPPORT,
} from "./libvirt/connection.ts";
import {
  abortJob,
  jobProgress,
  migrateDomain,
  setMetadataElement,
  VIR_DOMAIN_XML_MIGRATABLE,
} from "./libvirt/migration.ts";
import { destinationXml } from "./migration-xml.ts";
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
import { escapeXml } from "./xml.ts";

/** The directory pool an agent keeps its local disks in: one per cluster and host. */
export function poolName(owner: Owner): string {
  return `${STRATUS_PREFIX}${ownerTag(owner)}`;
}

/** The libvirt pool of a shared StoragePool: one per cluster, the same for every host of a daemon. */
export function sharedPoolName(owner: Owner, pool: string): string {
  const cluster = createHash("sha256").update(owner.cluster).digest("hex").slice(0, 8);
  return `${STRATUS_PREFIX}${cluster}-pool-${pool}`;
}

/** libvirt's XML for a StoragePool: a directory, or an NFS export mounted at the pool's path. */
export function poolXml(name: string, pool: PoolSpec): string {
  const target = `<target><path>${escapeXml(pool.path)}</path></target>`;
  if (pool.type !== "nfs" || !pool.nfs)
    return `<pool type='dir'><name>${escapeXml(name)}</name>${target}</pool>`;
  return [
    `<pool type='netfs'><name>${escapeXml(name)}</name>`,
    `<source><host name='${escapeXml(pool.nfs.server)}'/><dir path='${escapeXml(pool.nfs.exportPath)}'/><format type='nfs'/></source>`,
    target,
    "</pool>",
  ].join("");
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

/**
 * Whether a running guest is moved live (copied while it runs) or paused for the copy. KVM guests
 * move live. Emulated (TCG) guests are paused: QEMU 7.2's TCG can miss guest writes made during a
 * live copy, and the guest then runs on corrupt memory (seen here: a tiny guest's kernel hit
 * "list_del corruption" in its page allocator right after arriving, test/integration/live-migration).
 */
export function movesLive(domainXml: string): boolean {
  return /<domain\b[^>]*\btype=['"]kvm['"]/.test(domainXml);
}

export type Accelerator = "auto" | "kvm" | "tcg";

export class LibvirtHypervisor implements Hypervisor {
  private readonly libvirt: LibvirtConnection;
  private readonly owner: Owner;
  private readonly poolPath: string;
  /** The libvirt pool of this host's local StoragePool. */
  readonly pool: string;
  /** libvirt's test driver: volumes without files (moves stage a descriptor, see disk-files.ts). */
  private simulated = false;

  get disksPersist(): boolean {
    return !this.simulated;
  }
  /** The shared pools prepared here, by StoragePool name. */
  private readonly pools = new Map<string, PoolSpec>();

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
      this.libvirt.ensurePool(
        this.pool,
        poolXml(this.pool, { name: this.pool, type: "local", path: this.poolPath }),
      ),
    ]);
    const simulated = versions.type === "TEST";
    this.simulated = simulated;
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

  async pause(vmUid: string): Promise<void> {
    await this.libvirt.suspendDomain(domainName(vmUid));
  }

  async resume(vmUid: string): Promise<void> {
    await this.libvirt.resumeDomain(domainName(vmUid));
  }

  async migrate(vmUid: string, target: MigrationTarget): Promise<{ downtimeMs?: number }> {
    if (this.simulated)
      throw new HostProblem(
        "MigrationUnsupported",
        `Host ${this.owner.host} is simulated (libvirt's test driver), which cannot live-migrate guests.`,
      );
    const name = domainName(vmUid);
    const xml = await this.libvirt.domainXmlWith(name, VIR_DOMAIN_XML_MIGRATABLE);
    const stats = await migrateDomain({
      live: movesLive(xml),
      sourceUri: this.uri,
      name,
      destinationUri: target.uri,
      destinationXml: destinationXml(xml, this.owner, target),
      ...(target.migrateUri ? { migrateUri: target.migrateUri } : {}),
      ...(target.bandwidthMiBps ? { bandwidthMiBps: target.bandwidthMiBps } : {}),
    });
    return stats.downtime !== undefined ? { downtimeMs: stats.downtime } : {};
  }

  async migrationProgress(vmUid: string): Promise<MigrationProgress | undefined> {
    if (this.simulated) return undefined;
    return jobProgress(this.libvirt, domainName(vmUid)).catch((error: unknown) => {
      if (error instanceof LibvirtError && error.code === VIR_ERR_NO_DOMAIN) return undefined;
      throw error;
    });
  }

  async abortMigration(vmUid: string): Promise<void> {
    await abortJob(this.libvirt, domainName(vmUid));
  }

  async remoteDomainState(uri: string, vmUid: string) {
    const remote = await LibvirtConnection.open(uri);
    try {
      return (await remote.domain(domainName(vmUid)))?.state;
    } finally {
      await remote.close();
    }
  }

  async adopt(vmUid: string): Promise<ObservedDomain | undefined> {
    const domain = await this.observe(vmUid);
    if (!domain?.vm) return domain;
    const e = escapeXml;
    const { namespace, name } = domain.vm;
    const { cluster, host } = this.owner;
    await setMetadataElement(
      this.libvirt,
      domainName(vmUid),
      `<vm namespace='${e(namespace)}' name='${e(name)}' uid='${e(vmUid)}' cluster='${e(cluster)}' host='${e(host)}'/>`,
      "stratus",
      METADATA_NAMESPACE,
    );
    return this.observe(vmUid);
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

  async changeIso(vmUid: string, path: string | undefined): Promise<void> {
    const name = domainName(vmUid);
    // An IDE drive cannot be hot plugged: a guest started before domains had one waits for a restart.
    if (!hasCdrom(await this.libvirt.domainXml(name), ISO_DRIVE_TARGET))
      throw new HostProblem(
        "IsoDriveMissing",
        `The running guest has no ISO drive (it was started before Stratus gave every VM one); stop and start it to ${path ? "insert" : "eject"} the ISO.`,
      );
    await this.libvirt.updateDevice(name, cdromXml(ISO_DRIVE_TARGET, path), true);
  }

  liveDiskBytes(vmUid: string, target: string): Promise<bigint> {
    return this.libvirt.blockCapacity(domainName(vmUid), target);
  }

  async growLiveDisk(vmUid: string, target: string, bytes: bigint): Promise<void> {
    await this.libvirt.resizeBlockDevice(domainName(vmUid), target, bytes);
  }

  /** The libvirt pool behind a StoragePool this agent prepared. */
  private libvirtPool(pool: string): string {
    if (pool === localPoolName(this.owner.host)) return this.pool;
    const spec = this.pools.get(pool);
    if (!spec)
      throw new HostProblem("PoolNotReachable", `Pool ${pool} is not prepared on host ${this.owner.host}.`);
    return sharedPoolName(this.owner, pool);
  }

  private poolDirectory(pool: string): string {
    if (pool === localPoolName(this.owner.host)) return this.poolPath;
    const spec = this.pools.get(pool);
    if (!spec)
      throw new HostProblem("PoolNotReachable", `Pool ${pool} is not prepared on host ${this.owner.host}.`);
    return spec.path;
  }

  async preparePool(pool: PoolSpec): Promise<PoolReport> {
    const local = pool.name === localPoolName(this.owner.host);
    const path = local ? this.poolPath : pool.path;
    const name = local ? this.pool : sharedPoolName(this.owner, pool.name);
    try {
      if (pool.type === "sharedMountPoint") await assertMounted(path);
      const info = await this.libvirt.ensurePool(name, poolXml(name, { ...pool, path }));
      if (!local) this.pools.set(pool.name, { ...pool, path });
      return {
        name: pool.name,
        ready: true,
        path,
        capacityBytes: info.capacityBytes,
        availableBytes: info.availableBytes,
      };
    } catch (error) {
      this.pools.delete(pool.name);
      return { name: pool.name, ready: false, path, message: (error as Error).message.slice(0, 1000) };
    }
  }

  async ensureDisk(request: DiskRequest): Promise<DiskInfo> {
    const pool = this.libvirtPool(request.pool);
    const existing = await this.libvirt.volume(pool, request.name);
    if (existing && request.grow && existing.capacityBytes < request.capacityBytes)
      return this.libvirt.resizeVolume(pool, request.name, request.capacityBytes);
    if (existing) return existing;
    const { availableBytes } = await this.libvirt.poolInfo(pool);
    if (request.capacityBytes > availableBytes)
      throw new HostProblem(
        "InsufficientStorage",
        `${request.what}: pool ${request.pool} on host ${this.owner.host} has ${formatQuantity(availableBytes)} free, needs ${formatQuantity(request.capacityBytes)}.`,
      );
    return this.libvirt.createVolume(pool, {
      name: request.name,
      capacityBytes: request.capacityBytes,
      ...(request.backing
        ? { backingPath: request.backing.path, backingFormat: request.backing.format }
        : {}),
    });
  }

  disk(pool: string, name: string): Promise<DiskInfo | undefined> {
    return this.libvirt.volume(this.libvirtPool(pool), name);
  }

  deleteDisk(pool: string, name: string): Promise<void> {
    return this.libvirt.deleteVolume(this.libvirtPool(pool), name);
  }

  async exportDisk(
    pool: string,
    name: string,
    stagingPath: string,
    options: { pausedDomain?: boolean } = {},
  ): Promise<StagedDisk> {
    const disk = await this.libvirt.volume(this.libvirtPool(pool), name);
    if (!disk)
      throw new HostProblem("DiskMissing", `Pool ${pool} on host ${this.owner.host} has no disk ${name}.`);
    if (this.simulated) return stageDescriptor(stagingPath, disk.capacityBytes);
    return flattenTo(disk.path, stagingPath, { forceShare: options.pausedDomain === true });
  }

  async importDisk(pool: string, name: string, staged: StagedDisk): Promise<DiskInfo> {
    const libvirtPool = this.libvirtPool(pool);
    if (this.simulated) {
      const capacityBytes = await readDescriptor(staged);
      await this.libvirt.deleteVolume(libvirtPool, name);
      return this.libvirt.createVolume(libvirtPool, { name, capacityBytes });
    }
    await copyVerified(staged, join(this.poolDirectory(pool), name));
    await this.libvirt.poolInfo(libvirtPool); // refreshes the pool, so libvirt sees the new volume
    const disk = await this.libvirt.volume(libvirtPool, name);
    if (!disk) throw new HostProblem("ImportFailed", `Pool ${pool} does not show the imported disk ${name}.`);
    return disk;
  }

  removeStaged(stagingPath: string): Promise<void> {
    return rm(stagingPath, { force: true });
  }

  async syncNetwork(network: NetworkSpec, reservations: readonly DhcpReservation[]): Promise<void> {
    await refuseHostOverlap(network);
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

  /** The local pool's definition goes; shared pools' definitions stay for the daemon's other hosts. */
  removePools(): Promise<void> {
    return this.libvirt.deletePool(this.pool);
  }

  close(): Promise<void> {
    return this.libvirt.close();
  }

  private async describe(domain: DomainInfo): Promise<ObservedDomain> {
    const xml = await this.libvirt.domainXml(domain.name);
    const { owner, vm } = domainMetadataIn(xml);
    const configDrive = configDriveIn(xml);
    const iso = isoIn(xml);
    return {
      vmUid: vmUidOf(domain.name) as string,
      uuid: domain.uuid,
      state: domain.state,
      ...(domain.shutoffReason ? { shutoffReason: domain.shutoffReason } : {}),
      ...(owner ? { owner } : {}),
      ...(vm ? { vm } : {}),
      disks: disksIn(xml),
      ...(configDrive ? { configDrive } : {}),
      ...(iso ? { iso } : {}),
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

/**
 * A shared mount point that is not mounted is an empty directory on the root file system: disks
 * written there would live on this host only. It must be a mount of its own (or hold the marker
 * file `.stratus-shared` an administrator puts at the top of a shared file system).
 */
async function assertMounted(path: string): Promise<void> {
  const marker = await stat(join(path, ".stratus-shared")).then(
    () => true,
    () => false,
  );
  if (marker) return;
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  const mounted = mounts.split("\n").some((line) => line.split(" ")[4] === path);
  if (!mounted) throw new Error(`${path} is not a mount point here (and has no .stratus-shared marker)`);
}

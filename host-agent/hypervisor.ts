// The one seam between the host agent and the hypervisor. Every call is idempotent and names
// things by what Stratus knows (VM UID, disk name, network), never by libvirt handles, so the
// reconcile loop runs the same against libvirt (libvirt-hypervisor.ts) and the in-memory fake
// (fake-hypervisor.ts) its unit tests use.
import type { PoolType } from "../crds/index.ts";
import type { DomainSpec } from "./domain-xml.ts";
import type { DomainState, ShutoffReason } from "./libvirt/connection.ts";
import type { MigrationDestination } from "./migration-xml.ts";
import type { NetworkSpec } from "./network-xml.ts";

/** Who created a domain, disk pool or network: an agent acts only on what carries its own mark. */
export interface Owner {
  /** The cluster's identity (the UID of its kube-system namespace). */
  cluster: string;
  host: string;
}

/** A Stratus domain as the hypervisor shows it. */
export interface ObservedDomain {
  vmUid: string;
  uuid: string;
  state: DomainState;
  /** Set when the domain is shut off. */
  shutoffReason?: ShutoffReason;
  /** The mark the defining agent left; undefined for domains an older agent defined unmarked. */
  owner?: Owner;
  /** The VM the domain was defined for, from its metadata. */
  vm?: { namespace: string; name: string };
  /** File disks with their guest device. */
  disks: { path: string; target: string }[];
  /** The config drive ISO the domain boots with, if any. */
  configDrive?: string;
  /** The disc in the domain's ISO drive (a VM's spec.iso), if any. */
  iso?: string;
}

export interface DiskInfo {
  name: string;
  path: string;
  capacityBytes: bigint;
}

/** A StoragePool as this host reaches it. */
export interface PoolSpec {
  /** The StoragePool's name. */
  name: string;
  type: PoolType;
  /** The directory on this host (for nfs: where the export is mounted). */
  path: string;
  nfs?: { server: string; exportPath: string };
}

/** What the agent tells the pool's roll-up about it (Host status.storagePools). */
export interface PoolReport {
  name: string;
  ready: boolean;
  path: string;
  capacityBytes?: bigint;
  availableBytes?: bigint;
  message?: string;
}

/** A disk copied out of its pool for a move: where the copy is and what it must hash to. */
export interface StagedDisk {
  path: string;
  sha256: string;
  bytes: number;
}

export interface DiskRequest {
  /** The StoragePool the disk lives in. */
  pool: string;
  name: string;
  capacityBytes: bigint;
  /** A copy-on-write overlay of this image. */
  backing?: { path: string; format: "qcow2" | "raw" };
  /** What the disk is, for error messages ("root disk of VM ns/name"). */
  what: string;
  /** Grow the file when it is smaller (only while no running domain holds it). */
  grow: boolean;
}

export interface HostFacts {
  cpus: number;
  memoryBytes: number;
  storageBytes: bigint;
  /** KVM (hardware virtualisation), QEMU (emulation) or Simulator (libvirt's test driver). */
  type: "KVM" | "QEMU" | "Simulator";
  /** The domain type to define: kvm when libvirt offers it, qemu (TCG) otherwise, test for the simulator. */
  domainType: DomainSpec["type"];
  version: string;
  libvirtVersion: string;
  uri: string;
}

/** Where a live migration goes: the target's libvirt and the rewrites its definition needs. */
export interface MigrationTarget extends MigrationDestination {
  /** The target's libvirt URI (its Host's status.migrationUri). */
  uri: string;
  /** Where QEMU's migration stream connects (tcp://ADDRESS[:PORT]); libvirt picks when absent. */
  migrateUri?: string;
  /** A cap on the stream, MiB/s; 0 or absent: none. */
  bandwidthMiBps?: number;
}

/** A migration under way, as the hypervisor's job reports it. */
export interface MigrationProgress {
  elapsedMs: number;
  totalBytes: number;
  processedBytes: number;
  remainingBytes: number;
}

export interface DhcpReservation {
  mac: string;
  ip: string;
  name: string;
}

export interface Hypervisor {
  readonly uri: string;
  /**
   * Whether disks outlive this agent's connection. libvirt's test driver forgets every volume when
   * its connection closes, so a simulated host that restarts has no disks to protect and makes
   * them again; on a real hypervisor a missing disk is never made again.
   */
  readonly disksPersist: boolean;
  /** Prepares the host (its local pool) and describes it. */
  prepare(): Promise<HostFacts>;
  /** Makes the pool usable here (defined, started, refreshed) and says how it is; never throws for a pool that is down. */
  preparePool(pool: PoolSpec): Promise<PoolReport>;
  /** Reopens the connection when the daemon went away; throws while it does not answer. */
  ensureConnected(): Promise<void>;
  isAlive(): boolean;
  /** Calls `listener` with the VM UID of a Stratus domain whose lifecycle changed. */
  onDomainEvent(listener: (vmUid: string) => void): Promise<void>;

  /** Every Stratus domain (by name), whoever defined it. */
  listDomains(): Promise<ObservedDomain[]>;
  /** Domains Stratus did not create: shown for debugging, never touched. */
  otherDomains(): Promise<{ name: string; state: string }[]>;
  observe(vmUid: string): Promise<ObservedDomain | undefined>;
  /** Defines (or redefines) the domain, marked with this agent's owner. */
  define(spec: Omit<DomainSpec, "owner">): Promise<ObservedDomain>;
  start(vmUid: string): Promise<void>;
  /** Asks the guest to shut down (ACPI); it may ignore it. */
  requestShutdown(vmUid: string): Promise<void>;
  /** Pulls the plug. */
  powerOff(vmUid: string): Promise<void>;
  /** Pauses a running guest (its disks flushed and consistent until it resumes), and resumes it. */
  pause(vmUid: string): Promise<void>;
  resume(vmUid: string): Promise<void>;
  /**
   * Moves the running guest to the target's hypervisor while it runs (live, persistent there, gone
   * here); resolves once it runs there. Throws HostProblem where the driver cannot migrate.
   */
  migrate(vmUid: string, target: MigrationTarget): Promise<{ downtimeMs?: number }>;
  /** The migration job under way for the domain, or undefined when none runs. */
  migrationProgress(vmUid: string): Promise<MigrationProgress | undefined>;
  /** Cancels the migration under way; the guest goes on running here. */
  abortMigration(vmUid: string): Promise<void>;
  /** The state of the domain on another host's hypervisor (where a migration went), or undefined. */
  remoteDomainState(uri: string, vmUid: string): Promise<DomainState | undefined>;
  /** Marks a domain that arrived by live migration as this agent's (its metadata, live and persistent). */
  adopt(vmUid: string): Promise<ObservedDomain | undefined>;
  /** Removes the domain's definition (it must be off); disks stay. */
  undefine(vmUid: string): Promise<void>;
  /** Hot plug: `live` changes the running guest too. */
  attachDisk(vmUid: string, disk: DomainSpec["disks"][number], target: string, live: boolean): Promise<void>;
  detachDisk(vmUid: string, path: string, target: string, live: boolean): Promise<void>;
  /** Puts `path` in the running domain's ISO drive, or ejects its disc (undefined). */
  changeIso(vmUid: string, path: string | undefined): Promise<void>;
  /** The size the running guest sees for a disk, and growing it there. */
  liveDiskBytes(vmUid: string, target: string): Promise<bigint>;
  growLiveDisk(vmUid: string, target: string, bytes: bigint): Promise<void>;

  /** Creates the disk when missing; grows it when asked. Throws HostProblem when the pool is full. */
  ensureDisk(request: DiskRequest): Promise<DiskInfo>;
  disk(pool: string, name: string): Promise<DiskInfo | undefined>;
  deleteDisk(pool: string, name: string): Promise<void>;
  /**
   * Copies a disk that no running domain holds to `stagingPath` as one self-contained image (a
   * template's overlay is flattened), written under a temporary name and renamed, with its checksum.
   * `pausedDomain`: a paused QEMU still holds the disk; read it anyway (it is consistent while paused).
   */
  exportDisk(
    pool: string,
    name: string,
    stagingPath: string,
    options?: { pausedDomain?: boolean },
  ): Promise<StagedDisk>;
  /**
   * Copies a staged disk into the pool and checks the copy hashes to `staged.sha256`; throws
   * HostProblem (and leaves nothing) when it does not. An older disk of that name is replaced.
   */
  importDisk(pool: string, name: string, staged: StagedDisk): Promise<DiskInfo>;
  /** Removes a staged copy (a move that is done with it). */
  removeStaged(stagingPath: string): Promise<void>;

  /** The network's bridge (and DHCP with exactly these reservations), created when missing. */
  syncNetwork(network: NetworkSpec, reservations: readonly DhcpReservation[]): Promise<void>;
  /** Names of the libvirt networks this agent owns. */
  ownNetworks(): Promise<string[]>;
  networkReservations(name: string): Promise<DhcpReservation[]>;
  removeNetwork(name: string): Promise<void>;

  /** Removes the pool definitions this agent made (the files stay). */
  removePools(): Promise<void>;
  close(): Promise<void>;
}

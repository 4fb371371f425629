// The one seam between the host agent and the hypervisor. Every call is idempotent and names
// things by what Stratus knows (VM UID, disk name, network), never by libvirt handles, so the
// reconcile loop runs the same against libvirt (libvirt-hypervisor.ts) and the in-memory fake
// (fake-hypervisor.ts) its unit tests use.
import type { DomainSpec } from "./domain-xml.ts";
import type { DomainState, ShutoffReason } from "./libvirt/connection.ts";
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
}

export interface DiskInfo {
  name: string;
  path: string;
  capacityBytes: bigint;
}

export interface DiskRequest {
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

export interface DhcpReservation {
  mac: string;
  ip: string;
  name: string;
}

export interface Hypervisor {
  readonly uri: string;
  /** The storage pool this agent's disks live in. */
  readonly pool: string;
  /** Prepares the host (its disk pool) and describes it. */
  prepare(): Promise<HostFacts>;
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
  /** Removes the domain's definition (it must be off); disks stay. */
  undefine(vmUid: string): Promise<void>;
  /** Hot plug: `live` changes the running guest too. */
  attachDisk(vmUid: string, disk: DomainSpec["disks"][number], target: string, live: boolean): Promise<void>;
  detachDisk(vmUid: string, path: string, target: string, live: boolean): Promise<void>;
  /** The size the running guest sees for a disk, and growing it there. */
  liveDiskBytes(vmUid: string, target: string): Promise<bigint>;
  growLiveDisk(vmUid: string, target: string, bytes: bigint): Promise<void>;

  /** Creates the disk when missing; grows it when asked. Throws HostProblem when the pool is full. */
  ensureDisk(request: DiskRequest): Promise<DiskInfo>;
  disk(name: string): Promise<DiskInfo | undefined>;
  deleteDisk(name: string): Promise<void>;

  /** The network's bridge (and DHCP with exactly these reservations), created when missing. */
  syncNetwork(network: NetworkSpec, reservations: readonly DhcpReservation[]): Promise<void>;
  /** Names of the libvirt networks this agent owns. */
  ownNetworks(): Promise<string[]>;
  networkReservations(name: string): Promise<DhcpReservation[]>;
  removeNetwork(name: string): Promise<void>;

  /** Removes this agent's pool definition (the files stay). */
  removePool(): Promise<void>;
  close(): Promise<void>;
}

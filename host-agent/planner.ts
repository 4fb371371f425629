// Pure: what the agent does for one VM bound to its host. From the VM, what it references and the
// domain the hypervisor shows, the planner says: release it (deleted), evacuate it (maintenance),
// wait (the orchestration has not prepared it), report a problem, or run it with this domain,
// these disks and these NICs. The reconcile loop (vm-sync.ts) does the I/O around it.
import type {
  DiskOffering,
  Network,
  ServiceOffering,
  Template,
  VirtualMachine,
  Volume,
} from "../crds/index.ts";
import { needsRootVolume, RESTART_ANNOTATION, rootVolumeName } from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import {
  isIso,
  secondaryImagePath,
  templateFileFormat,
  type ZoneImage,
  zoneImage,
} from "../crds/template-images.ts";
import { admissionWait, growableBytes, requestedBytes } from "../crds/volume-admission.ts";
import { type Condition, findCondition } from "../runtime/conditions.ts";
import { type DomainSpec, diskTarget, macFor } from "./domain-xml.ts";
import type { DhcpReservation, ObservedDomain, Owner } from "./hypervisor.ts";
import { type NetworkSpec, networkSpecFor } from "./network-xml.ts";
import { HostProblem, Waiting } from "./problem.ts";
import { type RunIntent, runIntent } from "./vm-status.ts";

export const rootDiskName = (vmUid: string) => `root-${vmUid}`;
export const DATA_DISK_PREFIX = "data-";
export const dataDiskName = (volumeUid: string) => `${DATA_DISK_PREFIX}${volumeUid}`;

/** The conditions the orchestration (compute) publishes before a host may run the VM. */
export const PREPARED_CONDITIONS = ["VolumesReady", "NetworksReady"] as const;

export interface PlanInput {
  vm: VirtualMachine;
  host: string;
  owner: Owner;
  domain: ObservedDomain | undefined;
  inMaintenance: boolean;
  domainType: DomainSpec["type"];
  offering: ServiceOffering | undefined;
  template: Template | undefined;
  /** The Template spec.iso names, if it does and it exists. */
  iso: Template | undefined;
  /** A volume of the VM's namespace by name, if the agent knows it. */
  volume(name: string): Volume | undefined;
  diskOffering(name: string): DiskOffering | undefined;
  /** A network of the VM's namespace by name. */
  network(name: string): Network | undefined;
  storage: AgentStorage;
  /** The host's zone and where its secondary storage is mounted, if it has one. */
  zone: { name: string; secondaryPath?: string };
  paths: { cache: string; consoleSocket: string };
  /** The VM's account has a primary-storage limit: its disks wait for their grants. */
  storageLimited: boolean;
}

/** The pools this agent reaches, as the planner needs them. */
export interface AgentStorage {
  /** The directory of a pool usable here, or undefined when this host does not reach it. */
  pathOf(pool: string): string | undefined;
  /** The pool a new disk of this volume goes to (the shared rule of volume-placement.ts), or why none fits. */
  poolForNew(
    volume: Volume,
    offerings: { disk?: DiskOffering; service?: ServiceOffering },
  ): { pool: string } | { pool?: undefined; reason: string };
}

/** Where a disk lives: its pool, and whether the disk was made before (then it is never made again). */
export interface DiskHome {
  pool: string;
  existing: boolean;
}

export interface RootDiskPlan extends DiskHome {
  volume: Volume;
  name: string;
  /** The size asked for; an image's own virtual size wins when larger. */
  requestedBytes: bigint;
  /** A copy-on-write overlay of the template image (downloaded first when it has a URL). */
  image?: { path: string; format: "qcow2" | "raw"; url?: string; checksum?: string };
}

export interface DataDiskPlan extends DiskHome {
  volume: Volume;
  name: string;
  capacityBytes: bigint;
  serial: string;
}

export interface PlannedNic {
  name: string;
  network: Network;
  spec: NetworkSpec;
  mac: string;
  ip?: string;
}

export interface RunPlan {
  kind: "run";
  intent: RunIntent;
  /** The restart annotation's value when a restart was asked for and not yet done. */
  restartRequest?: string;
  root?: RootDiskPlan;
  directBoot?: {
    kernel: { url: string; path: string };
    initrd: { url: string; path: string };
    commandLine: string;
  };
  dataDisks: DataDiskPlan[];
  nics: PlannedNic[];
  /** The disc for the ISO drive (spec.iso), copied into the cache first like a template image. */
  iso?: { path: string; url?: string; checksum?: string };
  domain: Omit<DomainSpec, "owner">;
}

export type VmPlan =
  | { kind: "release" }
  | { kind: "evacuate" }
  /** Not prepared yet: its watch brings it back; `shown` waits are said in the VM's Ready condition. */
  | { kind: "wait"; reason: string; message: string; shown?: boolean }
  /** Something a user can fix: the VM's Ready condition says it. */
  | { kind: "problem"; problem: HostProblem }
  /** Only power changes: the domain stays as it is (nothing new to plug while the VM is not prepared). */
  | { kind: "power"; intent: RunIntent }
  | RunPlan;

/**
 * A stopped VM an administrator pinned to another host (migrateVirtualMachineWithVolume): this host
 * lets it go as for maintenance, and its disks follow it. A running one is never moved this way.
 */
function pinnedElsewhere({ vm, host, domain }: PlanInput): boolean {
  const pin = vm.spec.placement?.host;
  return (
    pin !== undefined &&
    pin !== host &&
    vm.spec.runStrategy === "Halted" &&
    (!domain || domain.state === "shutoff")
  );
}

/**
 * Where the root disk's image comes from, copied into the cache and checked: a URL image from the
 * zone's secondary storage once it is downloaded there (from the URL itself where the zone has no
 * secondary storage), an image made from a volume or snapshot from its file there; or a path every
 * host has. A disk made before needs only the cached copy it was made from.
 */
function templateImage(template: Template, input: Pick<PlanInput, "paths" | "zone">, rootExists: boolean) {
  const { source } = template.spec;
  const format = templateFileFormat(template);
  const cached = `${input.paths.cache}/${template.metadata.uid}.${format}`;
  if (source.volume || source.snapshot) {
    const image = template.status?.image;
    if (!image)
      throw new Waiting(
        "WaitingForTemplate",
        `Template ${template.metadata.name} is still being made from its ${source.volume ? "volume" : "snapshot"}.`,
      );
    // Written flattened by qemu-img: always qcow2, whatever the spec says.
    const path = `${input.paths.cache}/${template.metadata.uid}.qcow2`;
    return { path, format: "qcow2" as const, url: image.path, checksum: `sha256:${image.sha256}` };
  }
  if (!source.url) return { path: source.hostPath as string, format };
  const { name: zone, secondaryPath } = input.zone;
  if (!secondaryPath)
    return {
      path: cached,
      format,
      url: source.url,
      ...(template.spec.checksum ? { checksum: template.spec.checksum } : {}),
    };
  const entry = zoneImage(template, zone);
  if (entry?.state === "Ready" && entry.sha256 && !entry.remove)
    return {
      path: cached,
      format,
      url: secondaryImagePath(secondaryPath, template),
      checksum: `sha256:${entry.sha256}`,
    };
  if (rootExists) return { path: cached, format };
  throw notInZone(template, zone, entry);
}

/** Where an ISO's disc is on a host: its hostPath, or its copy in the agent's cache. */
export function discPath(template: Template, cache: string): string {
  return template.spec.source.hostPath ?? `${cache}/${template.metadata.uid}.${templateFileFormat(template)}`;
}

/**
 * The disc spec.iso puts in the ISO drive, found like a template image; none when it names none.
 * `inDrive`: a disc is in the domain's drive already, so a cached copy serves.
 */
export function isoImage(
  input: Pick<PlanInput, "vm" | "iso" | "paths" | "zone">,
  inDrive = false,
): RunPlan["iso"] {
  const wanted = input.vm.spec.iso;
  if (!wanted) return undefined;
  const disc = input.iso;
  if (!disc) throw new HostProblem("IsoNotFound", `ISO "${wanted}" does not exist.`);
  if (!isIso(disc))
    throw new HostProblem(
      "NotAnIso",
      `Template "${wanted}" is a disk image (format ${disc.spec.format ?? "qcow2"}), not an ISO: spec.iso names a template of format iso.`,
    );
  const image: { path: string; url?: string; checksum?: string } = templateImage(disc, input, inDrive);
  return {
    path: image.path,
    ...(image.url ? { url: image.url } : {}),
    ...(image.checksum ? { checksum: image.checksum } : {}),
  };
}

/** Why a new disk cannot be made from the template in this zone yet. */
function notInZone(template: Template, zone: string, entry: ZoneImage | undefined): HostProblem {
  const name = template.metadata.name;
  if (entry?.remove || entry?.state === "Removed")
    return new HostProblem(
      "TemplateDeleted",
      `Template ${name} is being deleted: its image is removed from zone ${zone}'s secondary storage.`,
    );
  if (entry?.state === "Error")
    return new HostProblem(
      "TemplateDownloadFailed",
      `Template ${name} could not be downloaded to zone ${zone}: ${entry.message ?? entry.reason}`,
    );
  return new Waiting(
    "WaitingForTemplate",
    entry?.host
      ? `Template ${name} is being downloaded to zone ${zone}'s secondary storage by host ${entry.host}.`
      : `Template ${name} waits for a Ready host of zone ${zone} to download it to the zone's secondary storage.`,
    { shown: true },
  );
}

export function planVm(input: PlanInput): VmPlan {
  const { vm, domain } = input;
  if (vm.metadata.deletionTimestamp) return { kind: "release" };
  if (input.inMaintenance || pinnedElsewhere(input)) return { kind: "evacuate" };
  const intent = runIntent(vm, domain);
  const conditions = vm.status?.conditions as Condition[] | undefined;
  const unprepared = PREPARED_CONDITIONS.map((type) => ({
    type,
    condition: findCondition(conditions, type),
  })).find(({ condition }) => condition?.status !== "True");
  if (unprepared) {
    // A running guest can still be stopped; nothing is defined or started until compute is done.
    if (domain && intent === "stop") return { kind: "power", intent };
    const { type, condition } = unprepared;
    return {
      kind: "wait",
      reason: `Waiting${type}`,
      message: condition
        ? `${type} is ${condition.status} (${condition.reason}${condition.message ? `: ${condition.message}` : ""}).`
        : `${type} is not evaluated yet.`,
    };
  }
  if (!domain && intent === "stop") return { kind: "power", intent };
  try {
    return planRun(input, intent);
  } catch (error) {
    if (error instanceof Waiting)
      return {
        kind: "wait",
        reason: error.reason,
        message: error.message,
        ...(error.shown ? { shown: true } : {}),
      };
    if (error instanceof HostProblem) return { kind: "problem", problem: error };
    throw error;
  }
}

function planRun(input: PlanInput, intent: RunIntent): RunPlan {
  const { vm, template, offering } = input;
  const uid = vm.metadata.uid as string;
  const namespace = vm.metadata.namespace as string;
  if (!offering)
    throw new HostProblem(
      "ServiceOfferingNotFound",
      `ServiceOffering "${vm.spec.serviceOffering}" does not exist.`,
    );
  if (!template) throw new HostProblem("TemplateNotFound", `Template "${vm.spec.template}" does not exist.`);
  const diskPath = (home: DiskHome, name: string) => `${input.storage.pathOf(home.pool)}/${name}`;
  const requestedRoot = vm.spec.rootDisk?.size ? parseQuantity(vm.spec.rootDisk.size) : 0n;
  const { source } = template.spec;
  // Deployed from an ISO: the root disk is blank, installed onto from the disc.
  const installsFromIso = isIso(template);
  if (installsFromIso && requestedRoot === 0n)
    throw new HostProblem(
      "RootDiskSizeMissing",
      `VM ${vm.metadata.name} boots from ISO ${template.metadata.name} onto a blank root disk: set spec.rootDisk.size.`,
    );
  const iso = isoImage(input, input.domain?.iso !== undefined);
  const disks: DomainSpec["disks"] = [];
  let root: RootDiskPlan | undefined;
  let directBoot: RunPlan["directBoot"];
  if (source.directBoot) {
    const cached = (part: "kernel" | "initrd") => ({
      url: source.directBoot?.[part] as string,
      path: `${input.paths.cache}/${template.metadata.uid}.${part}`,
    });
    directBoot = {
      kernel: cached("kernel"),
      initrd: cached("initrd"),
      commandLine: source.directBoot.commandLine ?? "console=ttyS0",
    };
  }
  if (needsRootVolume(vm, template)) {
    const volume = input.volume(rootVolumeName(vm.metadata.name as string));
    if (!volume)
      throw new Waiting("WaitingForVolume", `The root volume of VM ${vm.metadata.name} does not exist yet.`);
    const home = diskHome(input, volume);
    root = {
      volume,
      ...home,
      name: rootDiskName(uid),
      requestedBytes: home.existing
        ? growableBytes(volume, requestedRoot, input.storageLimited)
        : requestedRoot,
      ...(source.directBoot || installsFromIso
        ? {}
        : { image: templateImage(template, input, home.existing) }),
    };
    disks.push({ path: diskPath(root, root.name), format: "qcow2", serial: "root" });
  }
  const dataDisks = (vm.spec.dataVolumes ?? []).map((slot): DataDiskPlan => {
    const volume = input.volume(slot.volume);
    if (!volume)
      throw new HostProblem(
        "VolumeNotFound",
        `Volume "${slot.volume}" does not exist in namespace ${namespace}.`,
      );
    const holder = volume.status?.attachedTo?.virtualMachine;
    if (holder && holder !== vm.metadata.name)
      throw new Waiting("WaitingForVolume", `Volume "${slot.volume}" is attached to VM ${holder}.`);
    const size =
      volume.spec.size ??
      (volume.spec.diskOffering ? input.diskOffering(volume.spec.diskOffering)?.spec.size : undefined);
    if (!size)
      throw new HostProblem(
        "VolumeSizeUnknown",
        `Volume "${slot.volume}" has no size and its disk offering gives none.`,
      );
    const name = dataDiskName(volume.metadata.uid as string);
    const home = diskHome(input, volume);
    disks.push({ path: diskPath(home, name), format: "qcow2", serial: slot.name });
    const asked = parseQuantity(size);
    // An existing disk grows only as far as the account's primary-storage limit granted.
    const capacityBytes = home.existing ? growableBytes(volume, asked, input.storageLimited) : asked;
    return { volume, ...home, name, capacityBytes, serial: slot.name };
  });
  const nics = vmNics(vm).map((nic): PlannedNic => {
    const network = input.network(nic.network);
    if (!network)
      throw new HostProblem(
        "NetworkNotFound",
        `Network "${nic.network}" does not exist in namespace ${namespace}.`,
      );
    // The orchestration allocates the address and publishes it on the VM; DHCP must know it first.
    if (network.spec.cidr && !nic.ip)
      throw new Waiting("WaitingForAddress", `NIC ${nic.name} has no address on ${nic.network} yet.`);
    return { ...nic, network, spec: networkSpecFor(network, input.owner) };
  });
  const restartRequest = vm.metadata.annotations?.[RESTART_ANNOTATION];
  return {
    kind: "run",
    intent,
    ...(restartRequest !== undefined && restartRequest !== vm.status?.restartedAt ? { restartRequest } : {}),
    ...(root ? { root } : {}),
    ...(directBoot ? { directBoot } : {}),
    ...(iso ? { iso } : {}),
    dataDisks,
    nics,
    domain: {
      vm: { namespace, name: vm.metadata.name as string, uid },
      type: input.domainType,
      vcpus: offering.spec.cpu,
      memoryBytes: parseQuantity(offering.spec.memory),
      disks,
      ...(directBoot
        ? {
            directBoot: {
              kernel: directBoot.kernel.path,
              initrd: directBoot.initrd.path,
              commandLine: directBoot.commandLine,
            },
          }
        : {}),
      ...(iso ? { iso: iso.path } : {}),
      ...(installsFromIso ? { bootFromIso: true } : {}),
      consoleSocket: input.paths.consoleSocket,
      nics: nics.map((nic) => ({ mac: nic.mac, network: nic.spec.name })),
    },
  };
}

/**
 * The pool of a volume's disk on this host. A disk that exists stays in its pool; when this host
 * does not reach that pool the VM waits for the storage to move it (never a new, empty disk).
 */
function diskHome(input: PlanInput, volume: Volume): DiskHome {
  const name = volume.metadata.name as string;
  const current = volume.status?.pool;
  if (current) {
    if (input.storage.pathOf(current) === undefined)
      throw new Waiting(
        "WaitingForVolumeMove",
        `Volume "${name}" is in pool ${current}, which host ${input.host} does not reach; it is copied here first.`,
      );
    return { pool: current, existing: true };
  }
  const disk = volume.spec.diskOffering ? input.diskOffering(volume.spec.diskOffering) : undefined;
  // No disk is made before the storage controller granted its size (the account's limit).
  const notAdmitted = admissionWait(volume, requestedBytes(volume, disk), input.storageLimited);
  if (notAdmitted) throw new Waiting("WaitingForStorageLimit", notAdmitted);
  const service = volume.spec.type === "ROOT" ? input.offering : undefined;
  const choice = input.storage.poolForNew(volume, {
    ...(disk ? { disk } : {}),
    ...(service ? { service } : {}),
  });
  if ("reason" in choice) throw new HostProblem("NoStoragePool", `Volume "${name}": ${choice.reason}`);
  return { pool: choice.pool, existing: false };
}

export interface DiskChanges {
  /** A stopped domain whose disks differ is simply defined again (any driver can do that). */
  redefine: boolean;
  attach: { disk: DomainSpec["disks"][number]; target: string }[];
  /** Only data disks are ever detached; the root disk stays whatever the spec says. */
  detach: { path: string; target: string }[];
  /** A running domain's ISO drive holds another disc than spec.iso asks (none: ejected). */
  swapIso: boolean;
}

/**
 * How the domain's disks become the planned ones: redefine when off, hot plug when running. The
 * config drive is never hot plugged: a guest reads it at boot, so a new one waits for the next start.
 */
export function diskChanges(
  domain: ObservedDomain,
  wanted: DomainSpec["disks"],
  configDrive?: string,
  iso?: string,
): DiskChanges {
  const wantedPaths = new Set(wanted.map((d) => d.path));
  if (domain.state === "shutoff") {
    const same =
      domain.disks.length === wanted.length &&
      domain.disks.every((d) => wantedPaths.has(d.path)) &&
      domain.configDrive === configDrive &&
      domain.iso === iso;
    return { redefine: !same, attach: [], detach: [], swapIso: false };
  }
  const detach = domain.disks.filter(
    (d) => !wantedPaths.has(d.path) && (d.path.split("/").pop() ?? "").startsWith(DATA_DISK_PREFIX),
  );
  const used = new Set(domain.disks.filter((d) => !detach.includes(d)).map((d) => d.target));
  const attach: DiskChanges["attach"] = [];
  for (const disk of wanted) {
    if (domain.disks.some((d) => d.path === disk.path)) continue;
    let index = 0;
    while (used.has(diskTarget(index))) index++;
    used.add(diskTarget(index));
    attach.push({ disk, target: diskTarget(index) });
  }
  // A running guest's disc is swapped in its drive, as CloudStack's attachIso does.
  return { redefine: false, attach, detach, swapIso: domain.iso !== iso };
}

/** Each NIC of the VM with its MAC and the address the orchestration published for it. */
export function vmNics(vm: VirtualMachine): { name: string; network: string; mac: string; ip?: string }[] {
  return (vm.spec.nics ?? []).map((nic, index) => {
    const published = vm.status?.nics?.find((n) => n.name === nic.name && n.network === nic.network);
    return {
      name: nic.name,
      network: nic.network,
      mac: published?.macAddress ?? nic.macAddress ?? macFor(vm.metadata.uid as string, index),
      ...(published?.ipAddress ? { ip: published.ipAddress } : {}),
    };
  });
}

/** The DHCP reservations of one network on this host: each addressed NIC of each live VM on it. */
export function reservationsFor(network: Network, vms: readonly VirtualMachine[]): DhcpReservation[] {
  return vms
    .filter((vm) => !vm.metadata.deletionTimestamp && vm.metadata.namespace === network.metadata.namespace)
    .flatMap((vm) =>
      vmNics(vm)
        .filter((nic) => nic.network === network.metadata.name && nic.ip)
        .map((nic) => ({ mac: nic.mac, ip: nic.ip as string, name: vm.metadata.name as string })),
    );
}

/** Whether this host may say where the volume's disk is: it holds it, no host does yet, or storage released it here. */
export function mayTakeDisk(volume: Volume | undefined, host: string): boolean {
  const holder = volume?.status?.host;
  return holder === undefined || holder === host || volume?.status?.releasedTo === host;
}

// The disks of a VM on this host: the root disk (a copy-on-write overlay of the cached template
// image, or the template's kernel and initrd for direct boot) and the data volumes, all in the
// host's storage pool. Failures a user can fix become a HostProblem with a reason for the condition.
import { join } from "node:path";
import type { DiskOffering, Template, VirtualMachine, Volume } from "../crds/index.ts";
import { formatQuantity, parseQuantity } from "../crds/quantity.ts";
import type { DomainSpec } from "./domain-xml.ts";
import { checkImage, downloadOnce } from "./images.ts";
import type { LibvirtConnection, VolumeInfo } from "./libvirt/connection.ts";
import { HostProblem, Waiting } from "./problem.ts";

export interface Lookups {
  template(name: string): Template | undefined;
  volume(namespace: string, name: string): Volume | undefined;
  diskOffering(name: string): DiskOffering | undefined;
}

export interface AttachedVolume {
  volume: Volume;
  info: VolumeInfo;
  device: string;
  /** The size the Volume asks for (the disk may still be smaller while its domain runs). */
  desiredBytes?: bigint;
}

export interface VmDisks {
  disks: DomainSpec["disks"];
  directBoot?: DomainSpec["directBoot"];
  /** The root disk, when the VM has one (direct boot without a size has none). */
  root?: VolumeInfo;
  dataVolumes: AttachedVolume[];
}

/** The libvirt directory pool every agent keeps its disks in. */
export const STORAGE_POOL = "stratus";
export const rootVolumeName = (vmUid: string) => `root-${vmUid}`;
export const DATA_VOLUME_PREFIX = "data-";
export const dataVolumeName = (volumeUid: string) => `${DATA_VOLUME_PREFIX}${volumeUid}`;

export class DiskManager {
  private readonly libvirt: LibvirtConnection;
  readonly pool: string;
  private readonly cacheDir: string;
  private readonly hostName: string;

  constructor(options: { libvirt: LibvirtConnection; pool: string; cacheDir: string; hostName: string }) {
    this.libvirt = options.libvirt;
    this.pool = options.pool;
    this.cacheDir = options.cacheDir;
    this.hostName = options.hostName;
  }

  /** Makes sure every disk of the VM exists and returns what the domain needs. */
  /**
   * The VM's disk files, created when missing. With `grow`, volumes smaller than asked for are
   * grown here; while the domain runs they are grown through it instead (QEMU holds the image).
   */
  async ensureDisks(vm: VirtualMachine, lookups: Lookups, grow = false): Promise<VmDisks> {
    const template = lookups.template(vm.spec.template);
    if (!template)
      throw new HostProblem("TemplateNotFound", `Template "${vm.spec.template}" does not exist.`);
    const uid = vm.metadata.uid as string;
    const result: VmDisks = { disks: [], dataVolumes: [] };
    const { source } = template.spec;
    const requestedRoot = vm.spec.rootDisk?.size ? parseQuantity(vm.spec.rootDisk.size) : 0n;
    if (source.directBoot) {
      const [kernel, initrd] = await Promise.all(
        (["kernel", "initrd"] as const).map(async (part) => {
          const target = join(this.cacheDir, `${template.metadata.uid}.${part}`);
          await downloadOnce(source.directBoot?.[part] as string, target, undefined);
          return target;
        }),
      );
      result.directBoot = {
        kernel: kernel as string,
        initrd: initrd as string,
        commandLine: source.directBoot.commandLine ?? "console=ttyS0",
      };
      if (requestedRoot > 0n) {
        const root = await this.ensureVolume(
          rootVolumeName(uid),
          requestedRoot,
          `root disk of VM ${vm.metadata.namespace}/${vm.metadata.name}`,
          grow,
        );
        result.disks.push({ path: root.path, format: "qcow2", serial: "root" });
        result.root = root;
      }
    } else {
      const format = template.spec.format ?? "qcow2";
      const image = source.url
        ? join(this.cacheDir, `${template.metadata.uid}.${format}`)
        : (source.hostPath as string);
      if (source.url) await downloadOnce(source.url, image, template.spec.checksum);
      let facts: Awaited<ReturnType<typeof checkImage>>;
      try {
        facts = await checkImage(image, format);
      } catch (error) {
        if (error instanceof HostProblem) throw error;
        throw new HostProblem(
          "ImageUnreadable",
          `template image ${image} cannot be read on host ${this.hostName}: ${(error as Error).message}`,
        );
      }
      const size = requestedRoot > facts.virtualSize ? requestedRoot : facts.virtualSize;
      const root = await this.ensureVolume(
        rootVolumeName(uid),
        size,
        `root disk of VM ${vm.metadata.namespace}/${vm.metadata.name}`,
        grow,
        {
          backingPath: image,
          backingFormat: format,
        },
      );
      result.disks.push({ path: root.path, format: "qcow2", serial: "root" });
      result.root = root;
    }

    for (const slot of vm.spec.dataVolumes ?? []) {
      const volume = lookups.volume(vm.metadata.namespace as string, slot.volume);
      if (!volume)
        throw new HostProblem(
          "VolumeNotFound",
          `Volume "${slot.volume}" does not exist in namespace ${vm.metadata.namespace}.`,
        );
      if (volume.status?.host !== this.hostName)
        throw new Waiting(
          "WaitingForVolume",
          `Volume "${slot.volume}" is not bound to host ${this.hostName} yet (the storage controller binds it).`,
        );
      const holder = volume.status?.attachedTo?.virtualMachine;
      if (holder && holder !== vm.metadata.name)
        throw new Waiting("WaitingForVolume", `Volume "${slot.volume}" is attached to VM ${holder}.`);
      const size =
        volume.spec.size ??
        (volume.spec.diskOffering ? lookups.diskOffering(volume.spec.diskOffering)?.spec.size : undefined);
      if (!size) {
        throw new HostProblem(
          "VolumeSizeUnknown",
          `Volume "${slot.volume}" has no size and its disk offering gives none.`,
        );
      }
      const info = await this.ensureVolume(
        dataVolumeName(volume.metadata.uid as string),
        parseQuantity(size),
        `volume ${volume.metadata.namespace}/${volume.metadata.name}`,
        grow,
      );
      const device = `vd${"abcdefghijklmnopqrstuvwxyz"[result.disks.length]}`;
      result.disks.push({ path: info.path, format: "qcow2", serial: slot.name });
      result.dataVolumes.push({ volume, info, device, desiredBytes: parseQuantity(size) });
    }
    return result;
  }

  /** Removes the VM's root disk (data volumes belong to their Volume objects). */
  async deleteRootDisk(vmUid: string): Promise<void> {
    await this.libvirt.deleteVolume(this.pool, rootVolumeName(vmUid));
  }

  async deleteDataVolume(volumeUid: string): Promise<void> {
    await this.libvirt.deleteVolume(this.pool, dataVolumeName(volumeUid));
  }

  private async ensureVolume(
    name: string,
    capacityBytes: bigint,
    what: string,
    grow: boolean,
    backing?: { backingPath: string; backingFormat: "qcow2" | "raw" },
  ): Promise<VolumeInfo> {
    const existing = await this.libvirt.volume(this.pool, name);
    if (existing && grow && existing.capacityBytes < capacityBytes)
      return this.libvirt.resizeVolume(this.pool, name, capacityBytes);
    if (existing) return existing;
    const { availableBytes } = await this.libvirt.poolInfo(this.pool);
    if (capacityBytes > availableBytes) {
      throw new HostProblem(
        "InsufficientStorage",
        `${what}: pool ${this.pool} on host ${this.hostName} has ${formatQuantity(availableBytes)} free, needs ${formatQuantity(capacityBytes)}.`,
      );
    }
    return this.libvirt.createVolume(this.pool, { name, capacityBytes, ...backing });
  }
}

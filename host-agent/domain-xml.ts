// Pure: the libvirt domain XML of a VM. Only values Stratus computed go in, every one escaped;
// users never supply XML or libvirt options (a known class of CloudStack vulnerabilities).
import type { Owner } from "./hypervisor.ts";
import { escapeXml, unescapeXml } from "./xml.ts";

// The MAC derivation lives with the API: the orchestrator records the same MAC in VM status.
export { macFor } from "../crds/nics.ts";

/** Every domain Stratus defines is named with this prefix and the VM's UID. */
export const DOMAIN_PREFIX = "stratus-";
export const METADATA_NAMESPACE = "https://stratus.io/xmlns/virtualmachine/v1alpha1";

export function domainName(vmUid: string): string {
  return `${DOMAIN_PREFIX}${vmUid}`;
}

/** The VM UID a Stratus domain name carries, or undefined for domains Stratus did not create. */
export function vmUidOf(domain: string): string | undefined {
  const match = /^stratus-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(domain);
  return match?.[1];
}

export interface DomainSpec {
  vm: { namespace: string; name: string; uid: string };
  /** The defining agent's mark: another cluster's or host's agent never touches the domain. */
  owner: Owner;
  /** kvm with hardware virtualisation, qemu for emulation (TCG), test for libvirt's test driver. */
  type: "kvm" | "qemu" | "test";
  vcpus: number;
  memoryBytes: bigint;
  disks: { path: string; format: "qcow2" | "raw"; serial: string }[];
  nics: { mac: string; network: string }[];
  directBoot?: { kernel: string; initrd: string; commandLine: string };
  /** A unix socket for the serial console (the console relay reads it). */
  consoleSocket?: string;
  /** The config drive (an ISO, config-drive.ts), attached as a read-only CD-ROM. */
  configDrive?: string;
  /** The disc in the ISO drive (spec.iso); the drive is there, empty, without one. */
  iso?: string;
  /** Boot from the ISO drive, then the first disk: a VM deployed from an ISO. */
  bootFromIso?: boolean;
}

/** The config drive's device: IDE, which every machine type and guest kernel has. */
export const CONFIG_DRIVE_TARGET = "hdc";
/**
 * The ISO drive's device, in every domain (as CloudStack's KVM agent gives every VM one): an IDE
 * drive cannot be hot plugged, but its disc can be swapped while the guest runs.
 */
export const ISO_DRIVE_TARGET = "hdd";

/** A read-only IDE CD-ROM at `target` holding `path` (none: an empty drive). */
export function cdromXml(target: string, path: string | undefined, indent = "", bootOrder?: number): string {
  const e = escapeXml;
  return [
    "<disk type='file' device='cdrom'>",
    "  <driver name='qemu' type='raw'/>",
    ...(path ? [`  <source file='${e(path)}'/>`] : []),
    `  <target dev='${target}' bus='ide'/>`,
    "  <readonly/>",
    ...(bootOrder !== undefined ? [`  <boot order='${bootOrder}'/>`] : []),
    "</disk>",
  ]
    .map((line) => indent + line)
    .join("\n");
}

const DISK_TARGETS = "abcdefghijklmnopqrstuvwxyz";

/** The guest device of the index-th disk: vda, vdb, ... */
export function diskTarget(index: number): string {
  return `vd${DISK_TARGETS[index]}`;
}

export type DiskSpec = DomainSpec["disks"][number];

/** One virtio disk; also what hot plug attaches. The serial is how the guest tells disks apart. */
export function diskXml(disk: DiskSpec, target: string, indent = "", bootOrder?: number): string {
  const e = escapeXml;
  return [
    "<disk type='file' device='disk'>",
    `  <driver name='qemu' type='${e(disk.format)}'/>`,
    `  <source file='${e(disk.path)}'/>`,
    `  <target dev='${e(target)}' bus='virtio'/>`,
    `  <serial>${e(disk.serial.slice(0, 20))}</serial>`,
    ...(bootOrder !== undefined ? [`  <boot order='${bootOrder}'/>`] : []),
    "</disk>",
  ]
    .map((line) => indent + line)
    .join("\n");
}

/** The file disks of a domain's XML: path and guest device (CD-ROMs, the config drive, apart). */
export function disksIn(xml: string): { path: string; target: string }[] {
  return [...xml.matchAll(/<disk\b([^>]*)>([\s\S]*?)<\/disk>/g)].flatMap((match) => {
    if (/device=['"]cdrom['"]/.test(match[1] ?? "")) return [];
    const body = match[2] ?? "";
    const path = /<source file='([^']*)'/.exec(body)?.[1];
    const target = /<target dev='([^']*)'/.exec(body)?.[1];
    return path && target ? [{ path: unescapeXml(path), target }] : [];
  });
}

export const configDriveIn = (xml: string) => cdromIn(xml, CONFIG_DRIVE_TARGET);
export const isoIn = (xml: string) => cdromIn(xml, ISO_DRIVE_TARGET);

/** The domain's CD-ROM drives: their device, and the disc in each (none: empty). */
function cdromDrives(xml: string): { target: string; path?: string }[] {
  return [...xml.matchAll(/<disk\b[^>]*device=['"]cdrom['"][^>]*>([\s\S]*?)<\/disk>/g)].flatMap((match) => {
    const body = match[1] ?? "";
    const target = /<target dev='([^']*)'/.exec(body)?.[1];
    const path = /<source file='([^']*)'/.exec(body)?.[1];
    return target ? [{ target, ...(path ? { path: unescapeXml(path) } : {}) }] : [];
  });
}

/** Whether the domain has a CD-ROM drive at `target`, with a disc or empty. */
export const hasCdrom = (xml: string, target: string) => cdromDrives(xml).some((d) => d.target === target);

/** The disc in the domain's CD-ROM drive at `target` (the config drive's, or the ISO drive's), if any. */
export const cdromIn = (xml: string, target: string) =>
  cdromDrives(xml).find((d) => d.target === target)?.path;

/** The VM and the owner a Stratus domain's metadata names (libvirt keeps the element as written). */
export function domainMetadataIn(xml: string): { owner?: Owner; vm?: { namespace: string; name: string } } {
  const element =
    /<(?:\w+:)?vm\b[^>]*xmlns(?::\w+)?=["']https:\/\/stratus\.io\/xmlns\/virtualmachine\/v1alpha1["'][^>]*>/.exec(
      xml,
    )?.[0];
  if (!element) return {};
  const attribute = (name: string) => {
    const value = new RegExp(`\\s${name}=["']([^"']*)["']`).exec(element)?.[1];
    return value === undefined ? undefined : unescapeXml(value);
  };
  const [namespace, name, cluster, host] = ["namespace", "name", "cluster", "host"].map(attribute);
  return {
    ...(cluster !== undefined && host !== undefined ? { owner: { cluster, host } } : {}),
    ...(namespace !== undefined && name !== undefined ? { vm: { namespace, name } } : {}),
  };
}

export function buildDomainXml(spec: DomainSpec): string {
  if (spec.vcpus < 1) throw new Error(`a domain needs at least one vCPU, not ${spec.vcpus}`);
  if (spec.memoryBytes < 16n * 1024n * 1024n) throw new Error(`a domain needs at least 16 MiB of memory`);
  if (spec.disks.length > DISK_TARGETS.length) throw new Error(`at most ${DISK_TARGETS.length} disks`);
  const e = escapeXml;
  const memoryKiB = spec.memoryBytes / 1024n;
  const lines = [
    `<domain type='${e(spec.type)}'>`,
    `  <name>${e(domainName(spec.vm.uid))}</name>`,
    `  <uuid>${e(spec.vm.uid)}</uuid>`,
    `  <title>${e(`${spec.vm.namespace}/${spec.vm.name}`)}</title>`,
    "  <metadata>",
    `    <stratus:vm xmlns:stratus='${METADATA_NAMESPACE}' namespace='${e(spec.vm.namespace)}' name='${e(spec.vm.name)}' uid='${e(spec.vm.uid)}' cluster='${e(spec.owner.cluster)}' host='${e(spec.owner.host)}'/>`,
    "  </metadata>",
    `  <memory unit='KiB'>${memoryKiB}</memory>`,
    `  <vcpu placement='static'>${spec.vcpus}</vcpu>`,
    "  <os>",
    "    <type arch='x86_64' machine='pc'>hvm</type>",
    ...(spec.directBoot
      ? [
          `    <kernel>${e(spec.directBoot.kernel)}</kernel>`,
          `    <initrd>${e(spec.directBoot.initrd)}</initrd>`,
          `    <cmdline>${e(spec.directBoot.commandLine)}</cmdline>`,
        ]
      : spec.bootFromIso
        ? [] // per-device boot order: the ISO drive, then the root disk
        : ["    <boot dev='hd'/>"]),
    "  </os>",
    // ACPI: the power button (graceful shutdown) and a guest powering itself off both need it.
    "  <features>",
    "    <acpi/>",
    "    <apic/>",
    "  </features>",
    // OpenStack Nova's timers for x86 guests: no HPET (a timer guests do not need, and one more
    // device state to move), and an RTC and PIT that make up for ticks a paused guest missed.
    "  <clock offset='utc'>",
    "    <timer name='rtc' tickpolicy='catchup'/>",
    "    <timer name='pit' tickpolicy='delay'/>",
    "    <timer name='hpet' present='no'/>",
    "  </clock>",
    "  <on_poweroff>destroy</on_poweroff>",
    "  <on_reboot>restart</on_reboot>",
    "  <on_crash>destroy</on_crash>",
    "  <devices>",
    ...spec.disks.map((disk, index) =>
      diskXml(disk, diskTarget(index), "    ", spec.bootFromIso && index === 0 ? 2 : undefined),
    ),
    ...(spec.configDrive ? [cdromXml(CONFIG_DRIVE_TARGET, spec.configDrive, "    ")] : []),
    cdromXml(ISO_DRIVE_TARGET, spec.iso, "    ", spec.bootFromIso ? 1 : undefined),
    ...spec.nics.flatMap((nic) => [
      "    <interface type='network'>",
      `      <mac address='${e(nic.mac)}'/>`,
      `      <source network='${e(nic.network)}'/>`,
      "      <model type='virtio'/>",
      "    </interface>",
    ]),
    ...(spec.consoleSocket
      ? [
          "    <serial type='unix'>",
          `      <source mode='bind' path='${e(spec.consoleSocket)}'/>`,
          "      <target port='0'/>",
          "    </serial>",
          "    <console type='unix'>",
          `      <source mode='bind' path='${e(spec.consoleSocket)}'/>`,
          "      <target type='serial' port='0'/>",
          "    </console>",
        ]
      : []),
    "  </devices>",
    "</domain>",
  ];
  return `${lines.join("\n")}\n`;
}

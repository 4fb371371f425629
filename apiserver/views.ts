// Pure: Stratus objects as CloudStack shows them (docs/LEGACY-API.md appendix A): ids are the
// objects' UIDs, a namespace is the account, absent fields are left out, JSON types as the Go SDK
// expects (ints, int64 bytes, booleans).

import { addressPlan } from "../crds/addressing.ts";
import { displayState } from "../crds/display-state.ts";
import type {
  AffinityGroup,
  DiskOffering,
  IPAddress,
  Network,
  ServiceOffering,
  SSHKeyPair,
  StoragePool,
  Template,
  VirtualMachine,
  Volume,
  Zone,
} from "../crds/index.ts";
import { isSharedPoolType } from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import { downloadsPerZone, secondaryPathOf, type ZoneImage, zoneImage } from "../crds/template-images.ts";
import type { KubeObject } from "../runtime/client.ts";
import { affinityGroupView } from "./affinity-views.ts";
import { compact, formatDate, type Json } from "./envelope.ts";
import type { GuestLoginSpec } from "./guest-login-fields.ts";

const MIB = 1024n * 1024n;
const GIB = 1024n * MIB;

/** What a view may look up by name (the caches). */
export interface Catalog {
  zone(name: string): Zone | undefined;
  serviceOffering(name: string): ServiceOffering | undefined;
  diskOffering(name: string): DiskOffering | undefined;
  storagePool(name: string): StoragePool | undefined;
  template(name: string): Template | undefined;
  network(namespace: string, name: string): Network | undefined;
  addresses(namespace: string, vm: string): IPAddress[];
  affinityGroup(namespace: string, name: string): AffinityGroup | undefined;
  keyPair?(namespace: string, name: string): SSHKeyPair | undefined;
}

/** The VM's key pairs by their CloudStack names, comma-joined as CloudStack shows them. */
function keyPairsView(vm: VirtualMachine, catalog: Catalog): string | undefined {
  const names = (vm.spec as GuestLoginSpec).keyPairs ?? [];
  if (names.length === 0) return undefined;
  const namespace = vm.metadata.namespace as string;
  return names.map((name) => catalog.keyPair?.(namespace, name)?.spec.name ?? name).join(",");
}

const uid = (object: { metadata: { uid?: string | undefined } }) => object.metadata.uid as string;

/** CloudStack resource tags live in one annotation, as a JSON object (tag keys are free text). */
export const TAGS_ANNOTATION = "stratus.io/tags";

export function tagsOf(object: KubeObject): Record<string, string> {
  try {
    const parsed = JSON.parse(object.metadata.annotations?.[TAGS_ANNOTATION] ?? "{}") as unknown;
    return parsed && typeof parsed === "object" && !Array.isArray(parsed)
      ? (parsed as Record<string, string>)
      : {};
  } catch {
    return {};
  }
}

export function tagsView(object: KubeObject, resourceType: string): Json[] {
  return Object.entries(tagsOf(object)).map(([key, value]) => ({
    key,
    value: String(value),
    resourceid: uid(object),
    resourcetype: resourceType,
    account: object.metadata.namespace as string,
    domain: "ROOT",
  }));
}

export function zoneView(zone: Zone): Json {
  return compact({
    id: uid(zone),
    name: zone.metadata.name as string,
    description: zone.spec.displayName,
    networktype: zone.spec.networkType ?? "Advanced",
    allocationstate: zone.spec.allocationState ?? "Enabled",
    dns1: zone.spec.dns?.[0],
    dns2: zone.spec.dns?.[1],
    internaldns1: zone.spec.internalDns?.[0],
    domain: zone.spec.domain,
    securitygroupsenabled: false,
    localstorageenabled: true,
    type: "Core",
    tags: [],
  });
}

export function serviceOfferingView(offering: ServiceOffering): Json {
  return compact({
    id: uid(offering),
    name: offering.metadata.name as string,
    displaytext: offering.spec.displayName ?? (offering.metadata.name as string),
    cpunumber: offering.spec.cpu,
    cpuspeed: offering.spec.cpuSpeedMHz ?? 1000,
    memory: Number(parseQuantity(offering.spec.memory) / MIB),
    offerha: offering.spec.highAvailability ?? false,
    iscustomized: false,
    issystem: false,
    storagetype: offering.spec.storageType ?? "local",
    storagetags: offering.spec.storageTags?.length ? offering.spec.storageTags.join(",") : undefined,
    hosttags: offering.spec.hostTags?.join(","),
    created: formatDate(offering.metadata.creationTimestamp),
  });
}

export function diskOfferingView(offering: DiskOffering): Json {
  return compact({
    id: uid(offering),
    name: offering.metadata.name as string,
    displaytext: offering.spec.displayName ?? (offering.metadata.name as string),
    disksize: offering.spec.size ? Number(parseQuantity(offering.spec.size) / GIB) : 0,
    iscustomized: offering.spec.size === undefined,
    storagetype: offering.spec.storageType ?? "local",
    tags: offering.spec.tags?.length ? offering.spec.tags.join(",") : undefined,
    provisioningtype: "thin",
    created: formatDate(offering.metadata.creationTimestamp),
  });
}

/** CloudStack's words for a checksum mismatch (the agent's message names the sum it found). */
function downloadError(template: Template, entry: ZoneImage): string {
  const found = /has checksum sha256:([0-9a-f]{64})/.exec(entry.message ?? "")?.[1];
  const expected = template.spec.checksum?.replace(/^sha256:/, "");
  if (entry.reason === "ChecksumMismatch" && found && expected)
    return `checksum "{SHA-256}${found}" didn't match the given value, "{SHA-256}${expected}"`;
  return entry.message ?? entry.reason ?? "Download failed";
}

/** Whether the template is ready in the zone, its size there, and CloudStack's status text. */
export function templateAvailability(
  template: Template,
  zone: Zone | undefined,
): { ready: boolean; size?: number; status: string } {
  const image = template.status?.image;
  if (template.spec.source.volume || template.spec.source.snapshot)
    return image
      ? { ready: true, size: image.bytes, status: "Download Complete" }
      : { ready: false, status: "Creating" };
  // Host paths, kernels, and URL images in a zone without secondary storage: each host fetches them.
  if (!downloadsPerZone(template) || !zone || !secondaryPathOf(zone))
    return { ready: true, status: "Download Complete" };
  const entry = zoneImage(template, zone.metadata.name as string);
  if (entry?.remove || entry?.state === "Removed") return { ready: false, status: "Removing" };
  switch (entry?.state) {
    case "Ready":
      return {
        ready: true,
        ...(entry.bytes !== undefined ? { size: entry.bytes } : {}),
        status: "Download Complete",
      };
    case "Error":
      return { ready: false, status: downloadError(template, entry) };
    case "Downloading": {
      const percent = entry.totalBytes ? Math.floor(((entry.bytes ?? 0) * 100) / entry.totalBytes) : 0;
      return { ready: false, status: `${Math.min(percent, 99)}% Downloaded` };
    }
    default:
      return { ready: false, status: "Not Downloaded" };
  }
}

export function templateView(template: Template, zone: Zone | undefined): Json {
  const { ready, size, status } = templateAvailability(template, zone);
  return compact({
    id: uid(template),
    name: template.metadata.name as string,
    displaytext: template.spec.displayName ?? (template.metadata.name as string),
    zoneid: zone ? uid(zone) : undefined,
    zonename: zone?.metadata.name,
    isready: ready,
    ispublic: true,
    isfeatured: true,
    isextractable: false,
    crossZones: !template.spec.zones?.length,
    format: (template.spec.format ?? "qcow2").toUpperCase(),
    hypervisor: "KVM",
    ostypename: template.spec.osType ?? "Other Linux (64-bit)",
    ostypeid: template.spec.osType ?? "other",
    size,
    physicalsize: size,
    passwordenabled: template.spec.passwordEnabled ?? false,
    templatetype: "USER",
    status,
    bootable: template.spec.bootable ?? true,
    created: formatDate(template.metadata.creationTimestamp),
  });
}

/** Stratus states are CloudStack's; Pending is shown as Starting (libcloud knows no Pending). */
export function vmStateView(vm: VirtualMachine): string {
  const state = displayState(vm);
  return state === "Pending" ? "Starting" : state;
}

function isoFields(name: string, iso: Template | undefined): Record<string, Json | undefined> {
  return { isoid: iso ? uid(iso) : undefined, isoname: name, isodisplaytext: iso?.spec.displayName ?? name };
}

export function virtualMachineView(vm: VirtualMachine, catalog: Catalog): Json {
  const namespace = vm.metadata.namespace as string;
  const offering = catalog.serviceOffering(vm.spec.serviceOffering);
  const template = catalog.template(vm.spec.template);
  const zone = catalog.zone(vm.spec.zone);
  const addresses = catalog.addresses(namespace, vm.metadata.name as string);
  const nics = (vm.spec.nics ?? []).map((nic, index) => {
    const network = catalog.network(namespace, nic.network);
    const reported = vm.status?.nics?.find((n) => n.name === nic.name);
    const address = addresses.find((a) => a.spec.nic === nic.name)?.spec.address ?? reported?.ipAddress;
    const plan = network ? addressPlan(network) : undefined;
    return compact({
      id: `${uid(vm).slice(0, 24)}${String(index).padStart(12, "0")}`,
      networkid: network ? uid(network) : undefined,
      networkname: nic.network,
      ipaddress: address,
      macaddress: reported?.macAddress ?? nic.macAddress,
      gateway: plan?.gateway,
      netmask: plan?.netmask,
      isdefault: index === 0,
      traffictype: "Guest",
      type: network?.spec.type ?? "Isolated",
      deviceid: String(index),
    });
  });
  return compact({
    id: uid(vm),
    name: vm.metadata.name as string,
    displayname: vm.spec.displayName ?? (vm.metadata.name as string),
    instancename: `stratus-${uid(vm)}`,
    state: vmStateView(vm),
    account: namespace,
    domain: "ROOT",
    zoneid: zone ? uid(zone) : undefined,
    zonename: vm.spec.zone,
    templateid: template ? uid(template) : undefined,
    templatename: vm.spec.template,
    templatedisplaytext: template?.spec.displayName ?? vm.spec.template,
    // The ISO in its drive, as CloudStack shows an attached ISO.
    ...(vm.spec.iso ? isoFields(vm.spec.iso, catalog.template(vm.spec.iso)) : {}),
    serviceofferingid: offering ? uid(offering) : undefined,
    serviceofferingname: vm.spec.serviceOffering,
    cpunumber: offering?.spec.cpu,
    cpuspeed: offering ? (offering.spec.cpuSpeedMHz ?? 1000) : undefined,
    memory: offering ? Number(parseQuantity(offering.spec.memory) / MIB) : undefined,
    hostname: vm.status?.host,
    hypervisor: "KVM",
    haenable: offering?.spec.highAvailability ?? false,
    passwordenabled: template?.spec.passwordEnabled ?? false,
    keypairs: keyPairsView(vm, catalog),
    deleteprotection: false,
    rootdeviceid: 0,
    rootdevicetype: "ROOT",
    created: formatDate(vm.metadata.creationTimestamp),
    nic: nics,
    securitygroup: [],
    affinitygroup: (vm.spec.placement?.affinityGroups ?? []).flatMap((name) => {
      const group = catalog.affinityGroup(namespace, name);
      return group ? [affinityGroupView(group)] : [];
    }),
    tags: tagsView(vm, "UserVm"),
  });
}

/**
 * CloudStack's deviceid: 0 is the ROOT disk, data disks count from 1 whatever the guest calls
 * them (a direct-boot VM has no ROOT disk, so its first data disk is vda). A data disk's number is
 * its slot's (data1 is 1), else its place in the VM's list.
 */
function deviceId(volume: Volume, vm: VirtualMachine | undefined): number {
  if (volume.spec.type === "ROOT") return 0;
  const slots = vm?.spec.dataVolumes ?? [];
  const index = slots.findIndex((slot) => slot.volume === volume.metadata.name);
  const numbered = /^data(\d+)$/.exec(slots[index]?.name ?? "");
  if (numbered) return Number(numbered[1]);
  return index >= 0 ? index + 1 : 1;
}

function rootOffering(vm: VirtualMachine, catalog: Catalog) {
  const offering = catalog.serviceOffering(vm.spec.serviceOffering);
  return {
    serviceofferingid: offering ? uid(offering) : undefined,
    serviceofferingname: vm.spec.serviceOffering,
  };
}

export function volumeView(volume: Volume, catalog: Catalog, vm: VirtualMachine | undefined): Json {
  const zone = catalog.zone(volume.spec.zone);
  const size = volume.status?.capacity ?? volume.spec.size;
  const attached = volume.status?.attachedTo;
  const device = attached ? deviceId(volume, vm) : undefined;
  const diskOffering = volume.spec.diskOffering ? catalog.diskOffering(volume.spec.diskOffering) : undefined;
  const pool = volume.status?.pool ? catalog.storagePool(volume.status.pool) : undefined;
  return compact({
    id: uid(volume),
    name: volume.metadata.name as string,
    type: volume.spec.type ?? "DATADISK",
    state: volume.metadata.deletionTimestamp
      ? "Destroy"
      : volume.status?.phase === "Ready" || volume.status?.phase === "Attached"
        ? "Ready"
        : "Allocated",
    size: size ? Number(parseQuantity(size)) : undefined,
    account: volume.metadata.namespace,
    domain: "ROOT",
    zoneid: zone ? uid(zone) : undefined,
    zonename: volume.spec.zone,
    // A ROOT volume always belongs to its VM; a data volume to the VM it is attached to.
    virtualmachineid: vm && (attached || volume.spec.type === "ROOT") ? uid(vm) : undefined,
    vmname: attached?.virtualMachine,
    vmstate: vm ? vmStateView(vm) : undefined,
    deviceid: attached ? device : undefined,
    diskofferingid: diskOffering ? uid(diskOffering) : undefined,
    diskofferingname: volume.spec.diskOffering,
    // As CloudStack, a ROOT volume names its VM's service offering.
    ...(volume.spec.type === "ROOT" && vm ? rootOffering(vm, catalog) : {}),
    storage: volume.status?.pool,
    storageid: pool ? uid(pool) : undefined,
    storagetype: volume.status?.poolType
      ? isSharedPoolType(volume.status.poolType)
        ? "shared"
        : "local"
      : undefined,
    deleteprotection: false,
    destroyed: false,
    created: formatDate(volume.metadata.creationTimestamp),
    tags: tagsView(volume, "Volume"),
  });
}

export function networkView(network: Network, catalog: Catalog): Json {
  const zone = catalog.zone(network.spec.zone);
  const plan = addressPlan(network);
  return compact({
    id: uid(network),
    name: network.metadata.name as string,
    displaytext: network.spec.displayName ?? (network.metadata.name as string),
    account: network.metadata.namespace,
    domain: "ROOT",
    zoneid: zone ? uid(zone) : undefined,
    zonename: network.spec.zone,
    type: network.spec.type ?? "Isolated",
    cidr: network.spec.cidr,
    gateway: plan?.gateway,
    netmask: plan?.netmask,
    vlan: network.status?.vlan !== undefined ? String(network.status.vlan) : undefined,
    broadcastdomaintype: "Vlan",
    traffictype: "Guest",
    state: network.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")
      ? "Implemented"
      : "Allocated",
    networkofferingid: NETWORK_OFFERING_ID,
    networkofferingname: NETWORK_OFFERING_NAME,
    dns1: network.spec.dns?.[0],
    dns2: network.spec.dns?.[1],
    specifyipranges: false,
    isdefault: false,
    issystem: false,
    canusefordeploy: true,
    restartrequired: false,
    acltype: "Account",
    tags: tagsView(network, "Network"),
  });
}

/**
 * Stratus has one kind of guest network offering: an isolated network with DHCP, and in a zone
 * with a public network its router's services (the egress default, allow, is the Network's
 * `egressPolicy`).
 */
export const NETWORK_OFFERING_ID = "5ce0b2e4-6d1c-4f2b-9a57-2a0f3d8b1c01";
export const NETWORK_OFFERING_NAME = "DefaultIsolatedNetworkOffering";

export function networkOfferingView(): Json {
  return {
    id: NETWORK_OFFERING_ID,
    name: NETWORK_OFFERING_NAME,
    displaytext: "Isolated guest network with DHCP; with its router in a zone with a public network",
    guestiptype: "Isolated",
    traffictype: "Guest",
    specifyipranges: false,
    specifyvlan: false,
    isdefault: true,
    forvpc: false,
    conservemode: true,
    ispersistent: false,
    state: "Enabled",
    availability: "Optional",
    // The router's services (a zone with a public network): controllers/network/routers.ts.
    service: ["Dhcp", "Dns", "SourceNat", "StaticNat", "PortForwarding", "Lb", "Firewall", "UserData"].map(
      (name) => ({ name }),
    ),
    egressdefaultpolicy: true,
  };
}

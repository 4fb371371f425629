// What the VM loop knows of the API server (VmWorld), from the agent's own caches: its bound VMs,
// the catalogue, its Host, its volumes; a volume not on this host yet, a snapshot, or a network
// is read once (networks through their per-object watches).
import {
  type DiskOffering,
  type Host,
  type Network,
  Resources,
  rootVolumeName,
  type ServiceOffering,
  type Template,
  type VirtualMachine,
  type Volume,
  type VolumeSnapshot,
} from "../crds/index.ts";
import { RESOURCE_LIMITS_QUOTA, type ResourceQuota, storageLimitOf } from "../crds/resource-limits.ts";
import type { KubeClient } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import { unlessGone } from "../runtime/objects.ts";
import type { ReferencedObjects } from "./referenced-objects.ts";
import type { VmWorld } from "./vm-sync.ts";

export interface AgentCaches {
  hostName: string;
  client: KubeClient;
  placed: Informer<VirtualMachine>;
  self: Informer<Host>;
  offerings: Informer<ServiceOffering>;
  templates: Informer<Template>;
  diskOfferings: Informer<DiskOffering>;
  /** The accounts' limits (ResourceQuota stratus-resource-limits of each namespace). */
  limits: Informer<ResourceQuota>;
  /** Volumes whose disk is on this host. */
  localVolumes: Informer<Volume>;
  networks: ReferencedObjects<Network>;
  /** The networks whose router runs here. */
  routedNetworks?: () => Network[];
  /** The host's zone and its secondary storage. */
  zone: VmWorld["zone"];
  /** VMs live-migrating to this host: their networks and DHCP reservations exist here already. */
  arriving?: () => VirtualMachine[];
}

export function agentWorld(caches: AgentCaches): VmWorld {
  const { client, placed } = caches;
  return {
    vm: (key) => placed.get(key),
    boundVms: () => [...placed.list(), ...(caches.arriving?.() ?? [])],
    offering: (name) => caches.offerings.get(name),
    template: (name) => caches.templates.get(name),
    diskOffering: (name) => caches.diskOfferings.get(name),
    inMaintenance: () => caches.self.get(caches.hostName)?.spec.maintenance === true,
    storageLimited: (namespace) =>
      storageLimitOf(caches.limits.get(`${namespace}/${RESOURCE_LIMITS_QUOTA}`)?.spec?.hard) !== undefined,
    zone: caches.zone,
    ...(caches.routedNetworks ? { routedNetworks: caches.routedNetworks } : {}),
    volumes: async (vm) => {
      const namespace = vm.metadata.namespace as string;
      const names = [
        rootVolumeName(vm.metadata.name as string),
        ...(vm.spec.dataVolumes ?? []).map((d) => d.volume),
      ];
      const found = new Map<string, Volume>();
      // Volumes still attached to the VM that its spec no longer names: the loop detaches them.
      for (const volume of caches.localVolumes.list())
        if (
          volume.metadata.namespace === namespace &&
          volume.status?.attachedTo?.virtualMachine === vm.metadata.name
        )
          found.set(volume.metadata.name as string, volume);
      for (const name of names) {
        const volume =
          caches.localVolumes.get(`${namespace}/${name}`) ??
          (await unlessGone(client.get<Volume>(Resources.volumes, name, namespace)));
        if (volume) found.set(name, volume);
      }
      return found;
    },
    snapshot: (namespace, name) =>
      unlessGone(client.get<VolumeSnapshot>(Resources.volumeSnapshots, name, namespace)),
    networks: async (vm) => {
      const namespace = vm.metadata.namespace as string;
      const found = new Map<string, Network>();
      for (const nic of vm.spec.nics ?? []) {
        const network = await caches.networks.get(namespace, nic.network);
        if (network) found.set(nic.network, network);
      }
      return found;
    },
  };
}

/** Whether the VM uses the network (its changes concern the VM). */
export function usesNetwork(vm: VirtualMachine, network: Network): boolean {
  return (
    vm.metadata.namespace === network.metadata.namespace &&
    (vm.spec.nics ?? []).some((n) => n.network === network.metadata.name)
  );
}

/** Whether the volume is one of the VM's (its changes concern the VM). */
export function usesVolume(vm: VirtualMachine, volume: Volume): boolean {
  if (vm.metadata.namespace !== volume.metadata.namespace) return false;
  return (
    (vm.spec.dataVolumes ?? []).some((d) => d.volume === volume.metadata.name) ||
    (volume.metadata.ownerReferences ?? []).some((o) => o.uid === vm.metadata.uid)
  );
}

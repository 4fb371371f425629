// The CloudStack commands Stratus serves, each over the Stratus kinds (docs/LEGACY-API.md 4).
import { readFileSync } from "node:fs";
import { displayState } from "../crds/display-state.ts";
import {
  type Network,
  RESTART_ANNOTATION,
  Resources,
  type VirtualMachine,
  type Volume,
  type VolumeSnapshot,
} from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import type { KubeObject, ResourceType } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import { ACCOUNT_COMMANDS } from "./account-commands.ts";
import { AFFINITY_COMMANDS, groupMembersFilter, requestedGroups } from "./affinity-commands.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { createDeployDataDisk } from "./deploy-disk.ts";
import { ApiError, ERROR, entityNotFound, type Json, ROOT_DOMAIN_ID } from "./envelope.ts";
import { deployGuestLogin, GUEST_LOGIN_COMMANDS, writeVmPassword } from "./guest-login.ts";
import { guestLoginUnsupported, prunedGuestLoginField } from "./guest-login-fields.ts";
import { HOST_COMMANDS } from "./host-commands.ts";
import { IN_USE_BY, jobView, submitJob } from "./jobs.ts";
import { KEY_PAIR_COMMANDS } from "./keypair-commands.ts";
import {
  byId,
  filtered,
  namespaced,
  ownedById,
  ownedByUid,
  page,
  patchFromCurrent,
  requireClusterRead,
} from "./listing.ts";
import { NETWORK_COMMANDS } from "./network-commands.ts";
import { OFFERING_COMMANDS } from "./offering-commands.ts";
import { DNS_LABEL } from "./params.ts";
import { RESOURCE_LIMIT_COMMANDS } from "./resource-limit-commands.ts";
import { SNAPSHOT_COMMANDS } from "./snapshot-commands.ts";
import { snapshotState } from "./snapshot-views.ts";
import { STORAGE_POOL_COMMANDS } from "./storage-commands.ts";
import { TEMPLATE_COMMANDS } from "./template-commands.ts";
import { requestedUserData, userDataSecretName, writeUserData } from "./user-data.ts";
import { USER_DATA_COMMANDS } from "./user-data-commands.ts";
import {
  diskOfferingView,
  NETWORK_OFFERING_ID,
  networkOfferingView,
  networkView,
  serviceOfferingView,
  TAGS_ANNOTATION,
  tagsOf,
  tagsView,
  templateAvailability,
  templateView,
  virtualMachineView,
  volumeView,
  zoneView,
} from "./views.ts";
import { VM_MIGRATION_COMMANDS } from "./vm-migration-commands.ts";
import { VOLUME_MIGRATION_COMMANDS } from "./volume-migration-commands.ts";

/** How long queryAsyncJobResult waits for a just-created job to reach this replica's cache. */
const JOB_CACHE_GRACE_MS = 2_000;
const GIB = 1024n ** 3n;

const vmView = (api: CloudStackApi, vm: VirtualMachine) => virtualMachineView(vm, api);
const attachedVm = (api: CloudStackApi, volume: Volume) => {
  const name = volume.status?.attachedTo?.virtualMachine;
  return name ? api.vms.get(`${volume.metadata.namespace}/${name}`) : undefined;
};

function setRunStrategy(call: Call, vm: VirtualMachine, runStrategy: "Always" | "Halted") {
  return call.caller.client.mergePatch(
    Resources.virtualMachines,
    vm.metadata.name as string,
    vm.metadata.namespace,
    {
      spec: { runStrategy },
    },
  );
}

/** start and stop: the VM's runStrategy, then a job that ends when the VM gets there. */
function runStrategyCommand(command: string, runStrategy: "Always" | "Halted"): Command {
  return {
    async: true,
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      await setRunStrategy(call, vm, runStrategy);
      return jobAnswer(call, command, vm);
    },
  };
}

async function jobAnswer(
  call: Call,
  command: string,
  target: KubeObject & { kind?: string },
  extra?: Record<string, string>,
): Promise<Json> {
  const job = await submitJob(call, command, target, extra);
  return { jobid: job.metadata.uid as string };
}

/** A list of a cluster-scoped catalog kind (zones, offerings), for anyone RBAC lets list it. */
function catalogList<T extends KubeObject & { spec: { displayName?: string } }>(
  type: ResourceType,
  informer: (api: CloudStackApi) => Informer<T>,
  itemKey: string,
  view: (object: T) => Json,
): Command {
  return {
    async handler(call) {
      await requireClusterRead(call, type);
      return page(
        call,
        itemKey,
        filtered(call, informer(call.api).list(), (o) => o.spec.displayName).map(view),
      );
    },
  };
}

const catalogCommands: Record<string, Command> = {
  listZones: catalogList(Resources.zones, (api) => api.zones, "zone", zoneView),
  listServiceOfferings: catalogList(
    Resources.serviceOfferings,
    (api) => api.serviceOfferings,
    "serviceoffering",
    serviceOfferingView,
  ),
  listDiskOfferings: catalogList(
    Resources.diskOfferings,
    (api) => api.diskOfferings,
    "diskoffering",
    diskOfferingView,
  ),
  listTemplates: {
    async handler(call) {
      call.params.required("templatefilter");
      await requireClusterRead(call, Resources.templates);
      const zoneId = call.params.uuid("zoneid");
      const zones = zoneId ? call.api.zones.byIndex("uid", zoneId) : call.api.zones.list();
      if (zoneId && zones.length === 0) throw entityNotFound("zoneid", zoneId);
      const templates = filtered(call, call.api.templates.list(), (t) => t.spec.displayName);
      const isready = call.params.get("isready") === undefined ? undefined : call.params.flag("isready");
      // One entry per template and zone it is available in, as CloudStack lists them.
      const entries = templates.flatMap((t) =>
        zones
          .filter((z) => !t.spec.zones?.length || t.spec.zones.includes(z.metadata.name as string))
          .filter((z) => isready === undefined || templateAvailability(t, z).ready === isready)
          .map((z) => templateView(t, z)),
      );
      return page(call, "template", entries);
    },
  },
  listNetworkOfferings: {
    async handler(call) {
      const id = call.params.get("id");
      const name = call.params.get("name");
      const offering = networkOfferingView() as Record<string, Json>;
      const matches = (!id || id === NETWORK_OFFERING_ID) && (!name || name === offering.name);
      return page(call, "networkoffering", matches ? [offering] : []);
    },
  },
  listCapabilities: {
    async handler() {
      return {
        capability: {
          cloudstackversion: "4.20.0-stratus",
          securitygroupsenabled: false,
          userpublictemplateenabled: false,
          supportELB: "false",
          projectinviterequired: false,
          allowusercreateprojects: false,
          customdiskofferingminsize: 1,
          customdiskofferingmaxsize: 65_536,
          kvmsnapshotenabled: false,
          apilimitinterval: 1,
          apilimitmax: 0,
          dynamicrolesenabled: false,
        },
      };
    },
  },
  listApis: {
    async handler(call) {
      const name = call.params.get("name");
      const apis = apiIndex().filter((api) => api.name in COMMANDS && (!name || api.name === name));
      return page(
        call,
        "api",
        apis.map((api) => api as unknown as Json),
      );
    },
  },
};

const vmCommands: Record<string, Command> = {
  listVirtualMachines: {
    async handler(call) {
      const state = call.params.get("state")?.toLowerCase();
      const zoneId = call.params.uuid("zoneid");
      const members = await groupMembersFilter(call);
      const vms = filtered(
        call,
        await namespaced(call, call.api.vms, Resources.virtualMachines),
        (vm) => vm.spec.displayName,
      )
        .filter(members)
        .map((vm) => vmView(call.api, vm) as Record<string, Json>)
        .filter((vm) => !state || String(vm.state).toLowerCase() === state)
        .filter((vm) => !zoneId || vm.zoneid === zoneId);
      return page(call, "virtualmachine", vms);
    },
  },
  deployVirtualMachine: {
    async: true,
    async handler(call) {
      const { params, api } = call;
      const offering = byId(api.serviceOfferings, call, "serviceofferingid");
      const template = byId(api.templates, call, "templateid");
      const zone = byId(api.zones, call, "zoneid");
      const name = (params.get("name") ?? `vm-${Math.random().toString(16).slice(2, 10)}`).toLowerCase();
      if (!DNS_LABEL.test(name) || name.length > 63)
        throw new ApiError(
          ERROR.PARAM,
          `Invalid parameter name value=${name}: a VM name is a host name (letters, digits and hyphens)`,
        );
      const asked = params.list("networkids").map((id) => {
        const [network] = api.networks.byIndex("uid", id.toLowerCase());
        if (!network || network.metadata.namespace !== call.caller.account)
          throw entityNotFound("networkids", id);
        return network;
      });
      const networks = asked.length > 0 ? asked : [defaultNetwork(call, zone.metadata.name as string)];
      const rootDiskSize = params.integer("rootdisksize");
      const userData = await requestedUserData(call, call.caller.account);
      const guestLogin = await deployGuestLogin(call, template, name);
      const address = params.get("ipaddress");
      const affinityGroups = await requestedGroups(call, call.caller.account);
      const dataDisk = await createDeployDataDisk(call, name, zone.metadata.name as string);
      const created = call.caller.client.create<VirtualMachine>(Resources.virtualMachines, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "VirtualMachine",
        metadata: {
          name,
          namespace: call.caller.account,
          annotations: { "stratus.io/created-by": "cloudstack-api" },
        },
        spec: {
          zone: zone.metadata.name as string,
          serviceOffering: offering.metadata.name as string,
          template: template.metadata.name as string,
          runStrategy: params.flag("startvm", true) ? "Always" : "Halted",
          ...(params.get("displayname") ? { displayName: params.get("displayname") as string } : {}),
          ...(rootDiskSize ? { rootDisk: { size: `${rootDiskSize}Gi` } } : {}),
          ...(userData ? { userDataSecret: userDataSecretName(name) } : {}),
          ...(affinityGroups?.length ? { placement: { affinityGroups } } : {}),
          ...(dataDisk ? { dataVolumes: [dataDisk.slot] } : {}),
          ...guestLogin.spec,
          nics: networks.map((network, index) => ({
            name: `eth${index}`,
            network: network.metadata.name as string,
            ...(index === 0 && address ? { ipAddress: address } : {}),
          })),
        },
      });
      const vm = await created.catch(async (error: unknown) => {
        await dataDisk?.remove().catch(() => {});
        throw error;
      });
      const pruned = prunedGuestLoginField(vm, guestLogin.spec);
      // What the VM needs besides itself; without it, the deploy leaves nothing behind.
      await Promise.all([
        pruned ? Promise.reject(guestLoginUnsupported(pruned)) : undefined,
        userData ? writeUserData(call, vm, userData) : undefined,
        guestLogin.password ? writeVmPassword(api, vm, guestLogin.password) : undefined,
      ]).catch(async (error: unknown) => {
        await call.caller.client.delete(Resources.virtualMachines, name, call.caller.account).catch(() => {});
        await dataDisk?.remove().catch(() => {});
        throw error;
      });
      const job = await submitJob(call, "deployVirtualMachine", vm);
      return { id: vm.metadata.uid as string, jobid: job.metadata.uid as string };
    },
  },
  startVirtualMachine: runStrategyCommand("startVirtualMachine", "Always"),
  stopVirtualMachine: runStrategyCommand("stopVirtualMachine", "Halted"),
  destroyVirtualMachine: {
    async: true,
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      // Stratus has no recycle bin: destroy deletes, with or without expunge.
      const job = await submitJob(call, "destroyVirtualMachine", vm);
      await call.caller.client.delete(
        Resources.virtualMachines,
        vm.metadata.name as string,
        vm.metadata.namespace,
      );
      return { jobid: job.metadata.uid as string };
    },
  },
  queryAsyncJobResult: {
    async handler(call) {
      // Clients poll at once: a job created a moment ago (here or by another replica) may not be
      // in this replica's cache yet, so a miss waits briefly before it is an unknown id.
      const id = call.params.requiredUuid("jobid");
      let job = call.api.jobs.byIndex("uid", id)[0];
      for (let waited = 0; !job && waited < JOB_CACHE_GRACE_MS; waited += 100) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        job = call.api.jobs.byIndex("uid", id)[0];
      }
      if (!job) throw entityNotFound("jobid", id);
      if (!(await call.api.can(call.caller, "get", Resources.asyncJobs, job.metadata.namespace)))
        throw entityNotFound("jobid", job.metadata.uid as string);
      return jobView(job);
    },
  },
};

const storageAndNetworkCommands: Record<string, Command> = {
  listVolumes: {
    async handler(call) {
      const type = call.params.get("type")?.toUpperCase();
      const vmId = call.params.uuid("virtualmachineid");
      const volumes = filtered(call, await namespaced(call, call.api.volumes, Resources.volumes))
        .filter((v) => !type || (v.spec.type ?? "DATADISK") === type)
        .map(
          (v) =>
            volumeView(v, call.api, attachedVm(call.api, v) ?? ownerVm(call.api, v)) as Record<string, Json>,
        )
        .filter((v) => !vmId || v.virtualmachineid === vmId);
      return page(call, "volume", volumes);
    },
  },
  listNetworks: {
    async handler(call) {
      const zoneId = call.params.uuid("zoneid");
      const networks = filtered(
        call,
        await namespaced(call, call.api.networks, Resources.networks),
        (n) => n.spec.displayName,
      )
        .map((n) => networkView(n, call.api) as Record<string, Json>)
        .filter((n) => !zoneId || n.zoneid === zoneId);
      return page(call, "network", networks);
    },
  },
  deleteNetwork: {
    async: true,
    async handler(call) {
      const network = await ownedById(call, call.api.networks, Resources.networks);
      // As CloudStack, a network VMs still use is not deleted: the job fails at once (jobs.ts)
      // rather than waiting for the VMs and deleting it later unasked.
      const users = call.api.vms
        .list()
        .filter(
          (vm) =>
            vm.metadata.namespace === network.metadata.namespace &&
            (vm.spec.nics ?? []).some((nic) => nic.network === network.metadata.name),
        )
        .map((vm) => vm.metadata.name as string);
      if (users.length > 0)
        return jobAnswer(
          call,
          "deleteNetwork",
          { ...network, kind: "Network" },
          { [IN_USE_BY]: users.join(",") },
        );
      const job = await submitJob(call, "deleteNetwork", network);
      await call.caller.client.delete(
        Resources.networks,
        network.metadata.name as string,
        network.metadata.namespace,
      );
      return { jobid: job.metadata.uid as string };
    },
  },
};

type Slots = NonNullable<VirtualMachine["spec"]["dataVolumes"]>;

/**
 * Changes a VM's dataVolumes from its current version, guarded by its resourceVersion (two
 * attaches at once must not drop one).
 */
function updateDataVolumes(call: Call, vm: VirtualMachine, change: (slots: Slots) => Slots): Promise<void> {
  return patchFromCurrent(call, Resources.virtualMachines, vm, (current) => ({
    spec: { dataVolumes: change(current.spec.dataVolumes ?? []) },
  }));
}

/** The volume commands: a CloudStack volume is a Volume; attaching is a VM's dataVolumes entry. */
/** createVolume's snapshotid: a backed-up snapshot of the caller's own account. */
async function snapshotForVolume(call: Call): Promise<VolumeSnapshot> {
  const snapshot = await ownedById(call, call.api.volumeSnapshots, Resources.volumeSnapshots, "snapshotid");
  if (snapshot.metadata.namespace !== call.caller.account)
    throw new ApiError(
      ERROR.PARAM,
      `Snapshot id=${snapshot.metadata.uid} belongs to account ${snapshot.metadata.namespace}: a volume is made from a snapshot of its own account`,
    );
  if (snapshotState(snapshot) !== "BackedUp")
    throw new ApiError(
      ERROR.PARAM,
      `Snapshot id=${snapshot.metadata.uid} is not in BackedUp state yet and can't be used for volume creation`,
    );
  return snapshot;
}

function snapshotZone(api: CloudStackApi, snapshot: VolumeSnapshot): string {
  const zone =
    snapshot.status?.zone ??
    api.volume(snapshot.metadata.namespace as string, snapshot.spec.volume)?.spec.zone;
  if (!zone)
    throw new ApiError(
      ERROR.PARAM,
      `Snapshot ${snapshot.metadata.name} has no zone yet; wait until it is BackedUp`,
    );
  return zone;
}

/** GiB for a volume from the snapshot: the size asked for, which may not be less than the snapshot's disk. */
function sizeFromSnapshot(snapshot: VolumeSnapshot, asked: number | undefined): number | undefined {
  const virtual = snapshot.status?.virtualSize ? parseQuantity(snapshot.status.virtualSize) : undefined;
  const needed = virtual === undefined ? undefined : Number((virtual + GIB - 1n) / GIB);
  if (asked !== undefined && needed !== undefined && asked < needed)
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter size value=${asked}: a volume from snapshot ${snapshot.metadata.name} needs at least ${needed} GiB`,
    );
  return asked ?? needed;
}

const volumeCommands: Record<string, Command> = {
  createVolume: {
    async: true,
    async handler(call) {
      const { params, api } = call;
      const name = (params.get("name") ?? `vol-${Math.random().toString(16).slice(2, 10)}`).toLowerCase();
      if (!DNS_LABEL.test(name)) throw new ApiError(ERROR.PARAM, `Invalid parameter name value=${name}`);
      // From a snapshot: its zone, and at least its disk's size (CloudStack ignores zoneid then).
      const snapshot = params.uuid("snapshotid") ? await snapshotForVolume(call) : undefined;
      const zoneName = snapshot ? snapshotZone(api, snapshot) : byId(api.zones, call, "zoneid").metadata.name;
      const offeringId = params.uuid("diskofferingid");
      const offering = offeringId ? byId(api.diskOfferings, call, "diskofferingid") : undefined;
      const size = snapshot ? sizeFromSnapshot(snapshot, params.integer("size")) : params.integer("size");
      if (!offering?.spec.size && !size)
        throw new ApiError(
          ERROR.PARAM,
          "Unable to execute API command createvolume due to missing parameter size (the disk offering has no size)",
        );
      const volume = await call.caller.client.create<Volume>(Resources.volumes, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "Volume",
        metadata: { name, namespace: call.caller.account },
        spec: {
          zone: zoneName as string,
          type: "DATADISK",
          ...(size ? { size: `${size}Gi` } : {}),
          ...(offering ? { diskOffering: offering.metadata.name as string } : {}),
          ...(snapshot ? { source: { snapshot: snapshot.metadata.name as string } } : {}),
        },
      });
      const job = await submitJob(call, "createVolume", { ...volume, kind: "Volume" });
      return { id: volume.metadata.uid as string, jobid: job.metadata.uid as string };
    },
  },
  attachVolume: {
    async: true,
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines, "virtualmachineid");
      if (vm.metadata.namespace !== volume.metadata.namespace)
        throw new ApiError(ERROR.PARAM, "the volume and the VM belong to different accounts");
      await updateDataVolumes(call, vm, (slots) => {
        if (slots.some((slot) => slot.volume === volume.metadata.name)) return slots;
        const taken = new Set(slots.map((slot) => slot.name));
        let index = 1;
        while (taken.has(`data${index}`)) index++;
        return [...slots, { name: `data${index}`, volume: volume.metadata.name as string }];
      });
      const job = await submitJob(call, "attachVolume", { ...volume, kind: "Volume" });
      return { jobid: job.metadata.uid as string };
    },
  },
  detachVolume: {
    async: true,
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      const holders = call.api.vms
        .list()
        .filter(
          (vm) =>
            vm.metadata.namespace === volume.metadata.namespace &&
            (vm.spec.dataVolumes ?? []).some((slot) => slot.volume === volume.metadata.name),
        );
      for (const vm of holders)
        await updateDataVolumes(call, vm, (slots) =>
          slots.filter((slot) => slot.volume !== volume.metadata.name),
        );
      const job = await submitJob(call, "detachVolume", { ...volume, kind: "Volume" });
      return { jobid: job.metadata.uid as string };
    },
  },
  resizeVolume: {
    async: true,
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      const size = call.params.integer("size");
      if (!size)
        throw new ApiError(
          ERROR.PARAM,
          "Unable to execute API command resizevolume due to missing parameter size",
        );
      await call.caller.client.mergePatch(
        Resources.volumes,
        volume.metadata.name as string,
        volume.metadata.namespace,
        {
          spec: { size: `${size}Gi` },
        },
      );
      const job = await submitJob(call, "resizeVolume", { ...volume, kind: "Volume" });
      return { jobid: job.metadata.uid as string };
    },
  },
  deleteVolume: {
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      if (volume.status?.attachedTo || volume.spec.type === "ROOT")
        throw new ApiError(
          ERROR.RESOURCE_IN_USE,
          `Please specify a volume that is not attached to any VM (${volume.metadata.name})`,
        );
      await call.caller.client.delete(
        Resources.volumes,
        volume.metadata.name as string,
        volume.metadata.namespace,
      );
      return { success: true };
    },
  },
  rebootVirtualMachine: {
    async: true,
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      if (displayState(vm) !== "Running")
        throw new ApiError(
          ERROR.PARAM,
          `Invalid state of VM ${vm.metadata.name}: only a running VM can be rebooted`,
        );
      await call.caller.client.mergePatch(
        Resources.virtualMachines,
        vm.metadata.name as string,
        vm.metadata.namespace,
        {
          metadata: { annotations: { [RESTART_ANNOTATION]: new Date().toISOString() } },
        },
      );
      return jobAnswer(call, "rebootVirtualMachine", vm);
    },
  },
};

/** Tags: kept in one annotation of the tagged object; CloudStack resource types map to kinds. */
const TAGGABLE: Record<
  string,
  { type: ResourceType; informer: (api: CloudStackApi) => Informer<KubeObject>; name: string }
> = {
  uservm: {
    type: Resources.virtualMachines,
    informer: (api) => api.vms as unknown as Informer<KubeObject>,
    name: "UserVm",
  },
  volume: {
    type: Resources.volumes,
    informer: (api) => api.volumes as unknown as Informer<KubeObject>,
    name: "Volume",
  },
  network: {
    type: Resources.networks,
    informer: (api) => api.networks as unknown as Informer<KubeObject>,
    name: "Network",
  },
};

function taggable(call: Call) {
  const resourceType = call.params.required("resourcetype");
  const kind = TAGGABLE[resourceType.toLowerCase()];
  if (!kind)
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter resourcetype value=${resourceType}: Stratus tags ${Object.values(TAGGABLE)
        .map((t) => t.name)
        .join(", ")}`,
    );
  return kind;
}

async function changeTags(
  call: Call,
  command: string,
  change: (tags: Record<string, string>) => void,
): Promise<Json> {
  const kind = taggable(call);
  const ids = call.params.list("resourceids");
  if (ids.length === 0)
    throw new ApiError(ERROR.PARAM, "Unable to execute API command due to missing parameter resourceids");
  for (const id of ids) {
    const object = await ownedByUid(call, kind.informer(call.api), kind.type, "resourceids", id);
    const tags = tagsOf(object);
    change(tags);
    await call.caller.client.mergePatch(
      kind.type,
      object.metadata.name as string,
      object.metadata.namespace,
      {
        metadata: { annotations: { [TAGS_ANNOTATION]: JSON.stringify(tags) } },
      },
    );
  }
  const job = await submitJob(call, command, {
    kind: "ResourceTag",
    metadata: { namespace: call.caller.account, name: ids.join(",").slice(0, 253) },
  });
  return { jobid: job.metadata.uid as string };
}

const tagCommands: Record<string, Command> = {
  createTags: {
    async: true,
    handler: (call) => {
      const entries = call.params.map("tags");
      if (entries.length === 0)
        throw new ApiError(
          ERROR.PARAM,
          "Unable to execute API command createtags due to missing parameter tags",
        );
      return changeTags(call, "createTags", (tags) => {
        for (const entry of entries) if (entry.key) tags[entry.key] = entry.value ?? "";
      });
    },
  },
  deleteTags: {
    async: true,
    handler: (call) => {
      const entries = call.params.map("tags");
      return changeTags(call, "deleteTags", (tags) => {
        if (entries.length === 0) for (const key of Object.keys(tags)) delete tags[key];
        for (const entry of entries)
          if (entry.key && (entry.value === undefined || tags[entry.key] === entry.value))
            delete tags[entry.key];
      });
    },
  },
  listTags: {
    async handler(call) {
      const wanted = call.params.get("resourcetype")?.toLowerCase();
      const resourceId = call.params.get("resourceid")?.toLowerCase();
      const key = call.params.get("key");
      const value = call.params.get("value");
      const entries: Json[] = [];
      for (const [type, kind] of Object.entries(TAGGABLE)) {
        if (wanted && wanted !== type) continue;
        const objects = await namespaced(call, kind.informer(call.api), kind.type);
        for (const object of objects)
          if (!resourceId || object.metadata.uid === resourceId)
            entries.push(
              ...tagsView(object, kind.name).filter(
                (tag) =>
                  (!key || (tag as Record<string, Json>).key === key) &&
                  (!value || (tag as Record<string, Json>).value === value),
              ),
            );
      }
      return page(call, "tag", entries);
    },
  },
};

function ownerVm(api: CloudStackApi, volume: Volume): VirtualMachine | undefined {
  const owner = volume.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine");
  return owner ? api.vms.get(`${volume.metadata.namespace}/${owner.name}`) : undefined;
}

/**
 * A deploy without networkids gets the account's network in the zone, as CloudStack's default
 * network. Stratus does not create one for an account that has none; with several the client
 * must choose, as CloudStack asks.
 */
function defaultNetwork(call: Call, zone: string): Network {
  const account = call.caller.account;
  const own = call.api.networks
    .list()
    .filter((n) => n.metadata.namespace === account && n.spec.zone === zone && !n.metadata.deletionTimestamp);
  if (own.length === 1) return own[0] as Network;
  throw new ApiError(
    ERROR.PARAM,
    own.length === 0
      ? `Account ${account} has no network in zone ${zone}; create one with createNetwork or specify networkIds (Stratus does not create an account's default network)`
      : `More than 1 default Isolated networks are found for account ${account}; please specify networkIds`,
  );
}

/** Things Stratus does not have yet (public IPs, port forwarding, projects) list as empty, as clients expect. */
const emptyList = (itemKey: string): Command => ({ handler: async (call) => page(call, itemKey, []) });

const accountCommands: Record<string, Command> = {
  listPublicIpAddresses: emptyList("publicipaddress"),
  // No zone has a public IP range yet: CloudStack's answer for that is insufficient capacity.
  associateIpAddress: {
    async: true,
    async handler(call) {
      const network = call.params.uuid("networkid")
        ? await ownedById(call, call.api.networks, Resources.networks, "networkid")
        : undefined;
      const zone = network ? call.api.zones.get(network.spec.zone) : byId(call.api.zones, call, "zoneid");
      throw new ApiError(
        ERROR.INSUFFICIENT_CAPACITY,
        `Insufficient address capacity: zone ${zone?.metadata.name ?? "?"} has no public IP range (Stratus has no public addresses yet)`,
      );
    },
  },
  disassociateIpAddress: {
    async: true,
    async handler(call) {
      throw entityNotFound("id", call.params.required("id"));
    },
  },
  listPortForwardingRules: emptyList("portforwardingrule"),
  listIpForwardingRules: emptyList("ipforwardingrule"),
  listProjects: emptyList("project"),
  listDomains: {
    async handler(call) {
      return page(call, "domain", [
        { id: ROOT_DOMAIN_ID, name: "ROOT", level: 0, path: "ROOT", haschild: false },
      ]);
    },
  },
  listOsTypes: {
    async handler(call) {
      const names = [
        ...new Set(call.api.templates.list().map((t) => t.spec.osType ?? "Other Linux (64-bit)")),
      ].sort();
      return page(
        call,
        "ostype",
        names.map((name) => ({ id: name, description: name, oscategoryid: "linux", isuserdefined: false })),
      );
    },
  },
  updateVirtualMachine: {
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      const displayName = call.params.get("displayname");
      const userData = await requestedUserData(call, vm.metadata.namespace as string);
      const secret = userData ? userDataSecretName(vm.metadata.name as string) : undefined;
      const updated = await call.caller.client.mergePatch<VirtualMachine>(
        Resources.virtualMachines,
        vm.metadata.name as string,
        vm.metadata.namespace,
        {
          spec: { ...(displayName ? { displayName } : {}), ...(secret ? { userDataSecret: secret } : {}) },
        },
      );
      if (userData) await writeUserData(call, updated, userData);
      return { virtualmachine: vmView(call.api, updated) };
    },
  },
  changeServiceForVirtualMachine: {
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      const offering = byId(call.api.serviceOfferings, call, "serviceofferingid");
      if (displayState(vm) !== "Stopped")
        throw new ApiError(
          ERROR.PARAM,
          `Unable to change the service offering of VM ${vm.metadata.name}: stop it first`,
        );
      const updated = await call.caller.client.mergePatch<VirtualMachine>(
        Resources.virtualMachines,
        vm.metadata.name as string,
        vm.metadata.namespace,
        {
          spec: { serviceOffering: offering.metadata.name as string },
        },
      );
      return { virtualmachine: vmView(call.api, updated) };
    },
  },
};

const lifecycleExtras: Record<string, Command> = {
  // Destroy already deletes in Stratus: expunging a VM that still exists is destroying it.
  expungeVirtualMachine: vmCommands.destroyVirtualMachine as Command,
  recoverVirtualMachine: {
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      throw new ApiError(
        ERROR.PARAM,
        `VM ${vm.metadata.name} is not destroyed: Stratus deletes destroyed VMs at once, so there is nothing to recover`,
      );
    },
  },
  updateVolume: {
    async: true,
    async handler(call) {
      const volume = await ownedById(call, call.api.volumes, Resources.volumes);
      const job = await submitJob(call, "updateVolume", { ...volume, kind: "Volume" });
      return { jobid: job.metadata.uid as string };
    },
  },
  updateNetwork: {
    async: true,
    async handler(call) {
      const network = await ownedById(call, call.api.networks, Resources.networks);
      const displayText = call.params.get("displaytext");
      if (displayText)
        await call.caller.client.mergePatch(
          Resources.networks,
          network.metadata.name as string,
          network.metadata.namespace,
          {
            spec: { displayName: displayText },
          },
        );
      const job = await submitJob(call, "updateNetwork", { ...network, kind: "Network" });
      return { jobid: job.metadata.uid as string };
    },
  },
};

export const COMMANDS: Record<string, Command> = {
  ...catalogCommands,
  ...vmCommands,
  ...storageAndNetworkCommands,
  ...volumeCommands,
  ...tagCommands,
  ...accountCommands,
  ...lifecycleExtras,
  ...NETWORK_COMMANDS,
  ...AFFINITY_COMMANDS,
  ...OFFERING_COMMANDS,
  ...STORAGE_POOL_COMMANDS,
  ...SNAPSHOT_COMMANDS,
  ...HOST_COMMANDS,
  ...VOLUME_MIGRATION_COMMANDS,
  ...VM_MIGRATION_COMMANDS,
  ...TEMPLATE_COMMANDS,
  ...KEY_PAIR_COMMANDS,
  ...GUEST_LOGIN_COMMANDS,
  ...USER_DATA_COMMANDS,
  ...ACCOUNT_COMMANDS,
  ...RESOURCE_LIMIT_COMMANDS,
};

interface ApiEntry {
  name: string;
  description: string;
  isasync: boolean;
  since: string;
  related: string;
  type: string;
  params: {
    name: string;
    description: string;
    type: string;
    length: number;
    required: boolean;
    related: string;
    since: string;
  }[];
  response: never[];
}

let index: ApiEntry[] | undefined;

/** listApis entries from CloudStack's own API index (async flag, parameters, required ones). */
export function apiIndex(): ApiEntry[] {
  index ??= readFileSync(new URL("./api-index.tsv", import.meta.url), "utf8")
    .split("\n")
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => {
      const [name = "", isasync, , required = "", all = ""] = line.split("\t");
      const requiredSet = new Set(required.split(",").filter(Boolean));
      return {
        name,
        description: `CloudStack ${name}, served by Stratus`,
        isasync: isasync === "true",
        since: "4.0.0",
        related: "",
        type: "",
        params: all
          .split(",")
          .filter(Boolean)
          .map((param) => ({
            name: param,
            description: param,
            type: "string",
            length: 255,
            required: requiredSet.has(param),
            related: "",
            since: "4.0.0",
          })),
        response: [],
      };
    });
  return index;
}

// CloudStack's live migration commands, root admin's only (as in CloudStack): migrateVirtualMachine
// makes a VirtualMachineMigration as the caller (RBAC on virtualmachinemigrations decides, e.g. the
// ClusterRole stratus-cloud-admin) and its job ends with the migration; findHostsForMigration
// answers every other host of the VM's zone with whether it fits and, if not, why, from the same
// judgement compute admits migrations with (controllers/compute/migration-decision.ts).

import { judgeTargets, refusal, refusalMessage } from "../controllers/compute/migration-decision.ts";
import { affinityOf, groupsOf, HostUsageCache } from "../controllers/scheduler/host-usage.ts";
import type { HostUsage } from "../controllers/scheduler/placement.ts";
import { needOf, poolUsages } from "../controllers/storage/pool-usage.ts";
import {
  type Host,
  Resources,
  rootVolumeName,
  type VirtualMachine,
  type VirtualMachineMigration,
} from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { jobObject, submitJob } from "./jobs.ts";
import { byId, ownedById, page } from "./listing.ts";
import { virtualMachineView } from "./views.ts";

/** The job parameter naming the migration a migrateVirtualMachine job waits for. */
const MIGRATION_PARAMETER = "stratus.migration";

/** CloudStack answers a non-admin's migrate with 531; Stratus asks RBAC the same question first. */
async function requireMigrationRights(call: Call, vm: VirtualMachine): Promise<void> {
  if (!(await call.api.can(call.caller, "create", Resources.virtualMachineMigrations, vm.metadata.namespace)))
    throw new ApiError(
      ERROR.ACCOUNT,
      `Caller is not a root admin, permission denied to migrate the VM (account ${call.caller.account} may not create virtualmachinemigrations)`,
    );
}

/** What compute's judgement needs, from the API component's caches. */
function facts(api: CloudStackApi, vm: VirtualMachine) {
  const namespace = vm.metadata.namespace as string;
  const offering = api.serviceOffering(vm.spec.serviceOffering);
  const own = [
    rootVolumeName(vm.metadata.name as string),
    ...(vm.spec.dataVolumes ?? []).map((d) => d.volume),
  ]
    .map((name) => api.volume(namespace, name))
    .filter((v) => v !== undefined);
  const zonePools = api.storagePools.list().filter((p) => p.spec.zone === vm.spec.zone);
  const diskOffering = (name: string | undefined) => (name ? api.diskOffering(name) : undefined);
  return {
    demand: offering
      ? HostUsageCache.demandOf(
          vm,
          offering,
          [],
          affinityOf(vm, (name) => api.affinityGroup(namespace, name)?.spec.type),
        )
      : undefined,
    storage: {
      volumes: own.map((v) => needOf(v, diskOffering, offering)),
      pools: poolUsages(
        zonePools,
        (pool) => api.volumes.list().filter((v) => v.status?.pool === pool),
        diskOffering,
        new Set(own.map((v) => `${namespace}/${v.metadata.name}`)),
      ),
      poolsByName: new Map(zonePools.map((p) => [p.metadata.name as string, p])),
    },
    hosts: api.hosts.list().map((host) => usageOf(api, host, vm)),
  };
}

/** What the VMs placed on a host take of it, and their groups; the moving VM does not count. */
function usageOf(api: CloudStackApi, host: Host, moving: VirtualMachine): HostUsage {
  const placed = api.vms
    .list()
    .filter((vm) => vm.status?.host === host.metadata.name && vm.metadata.uid !== moving.metadata.uid);
  let cpu = 0;
  let memoryBytes = 0n;
  const groups = new Set<string>();
  for (const vm of placed) {
    const offering = api.serviceOffering(vm.spec.serviceOffering);
    cpu += offering?.spec.cpu ?? 0;
    memoryBytes += offering ? parseQuantity(offering.spec.memory) : 0n;
    for (const group of groupsOf(vm)) groups.add(group);
  }
  return { host, cpu, memoryBytes, groups };
}

/** Migrations of the VM that compute admitted and that are not over. */
function activeOn(api: CloudStackApi) {
  return (host: string) =>
    api.migrations
      .list()
      .filter(
        (m) => m.status?.targetHost && !["Succeeded", "Failed", "Cancelled"].includes(m.status.phase ?? ""),
      )
      .filter((m) => m.status?.sourceHost === host || m.status?.targetHost === host).length;
}

const migrateVirtualMachine: Command = {
  async: true,
  async handler(call) {
    const vm = await ownedById(call, call.api.vms, Resources.virtualMachines, "virtualmachineid");
    await requireMigrationRights(call, vm);
    if (call.params.get("storageid"))
      throw new ApiError(
        ERROR.PARAM,
        "storageid is not supported: move a stopped VM's volumes with migrateVolume",
      );
    const host = call.params.get("hostid") ? byId(call.api.hosts, call, "hostid") : undefined;
    const autoselect = (call.params.get("autoselect") ?? "true").toLowerCase() !== "false";
    if (!host && !autoselect) throw new ApiError(ERROR.PARAM, "hostid is required when autoselect is false");
    const facts_ = facts(call.api, vm);
    const reason = refusal({ vm, storage: facts_.storage });
    if (reason === "VMNotRunning")
      throw new ApiError(ERROR.PARAM, `VM is not Running, unable to migrate the vm ${vm.metadata.uid}`);
    if (reason === "VolumeOnLocalStorage")
      throw new ApiError(
        ERROR.PARAM,
        `Unsupported operation, VM uses Local storage, cannot migrate (${refusalMessage({ vm, storage: facts_.storage, vmName: vm.metadata.name as string }, reason)})`,
      );
    if (host && host.metadata.name === vm.status?.host)
      throw new ApiError(
        ERROR.PARAM,
        "Cannot migrate VM, VM is already present on this host, please specify valid destination host to migrate the VM",
      );
    const migration = await call.caller.client.create<VirtualMachineMigration>(
      Resources.virtualMachineMigrations,
      {
        apiVersion: "stratus.io/v1alpha1",
        kind: "VirtualMachineMigration",
        metadata: {
          generateName: "migrate-",
          namespace: vm.metadata.namespace as string,
          annotations: { "stratus.io/created-by": "cloudstack-api" },
        },
        spec: {
          vm: vm.metadata.name as string,
          ...(host ? { targetHost: host.metadata.name as string } : {}),
        },
      },
    );
    const job = await submitJob(call, "migrateVirtualMachine", vm, {
      [MIGRATION_PARAMETER]: migration.metadata.name as string,
    });
    return { jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    const name = job.spec.parameters?.[MIGRATION_PARAMETER];
    const migration = name ? api.migrations.get(`${job.metadata.namespace}/${name}`) : undefined;
    const vm = jobObject(api.vms, job, job.spec.target?.uid);
    if (!migration || !vm)
      return { error: { code: ERROR.INTERNAL, text: "the migration or its VM was deleted" } };
    const { phase, message, targetHost } = migration.status ?? {};
    if (phase === "Failed" || phase === "Cancelled")
      return { error: { code: ERROR.INTERNAL, text: `Failed to migrate the vm: ${message ?? phase}` } };
    // Done once the VM is bound to the target and its agent reports it running there.
    if (phase === "Succeeded" && vm.status?.host === targetHost && vm.status?.state === "Running")
      return { result: { virtualmachine: virtualMachineView(vm, api) } };
    return undefined;
  },
};

function hostView(api: CloudStackApi, verdict: { host: string; suitable: boolean; reason?: string }): Json {
  const host = api.hosts.get(verdict.host);
  const zone = host ? api.zone(host.spec.zone) : undefined;
  return {
    id: (host?.metadata.uid as string) ?? verdict.host,
    name: verdict.host,
    zoneid: (zone?.metadata.uid as string) ?? "",
    zonename: host?.spec.zone ?? "",
    hypervisor: "KVM",
    type: "Routing",
    state: host?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ? "Up" : "Down",
    resourcestate: host?.status?.resourceState ?? "Enabled",
    cpunumber: host?.status?.capacity?.cpu ?? 0,
    memorytotal: host?.status?.capacity?.memory ? Number(parseQuantity(host.status.capacity.memory)) : 0,
    suitableformigration: verdict.suitable,
    requiresStorageMotion: false,
    ...(verdict.reason ? { notsuitablereason: verdict.reason } : {}),
  };
}

const findHostsForMigration: Command = {
  async handler(call) {
    const vm = await ownedById(call, call.api.vms, Resources.virtualMachines, "virtualmachineid");
    await requireMigrationRights(call, vm);
    const source = vm.status?.host;
    if (!source || vm.status?.state !== "Running")
      throw new ApiError(ERROR.PARAM, `VM is not Running, unable to migrate the vm ${vm.metadata.uid}`);
    const input = {
      migration: { metadata: {}, spec: { vm: vm.metadata.name as string } } as VirtualMachineMigration,
      vm,
      ...facts(call.api, vm),
      activeOn: activeOn(call.api),
      maxPerHost: Number.POSITIVE_INFINITY,
      now: new Date(),
    };
    const refused = refusal(input);
    const verdicts = judgeTargets(input, source).map((v) =>
      refused
        ? {
            host: v.host,
            suitable: false,
            reason: refusalMessage({ ...input, vmName: vm.metadata.name as string }, refused),
          }
        : v,
    );
    const keyword = call.params.get("keyword")?.toLowerCase();
    const shown = verdicts.filter((v) => !keyword || v.host.toLowerCase().includes(keyword));
    return page(
      call,
      "host",
      shown.map((v) => hostView(call.api, v)),
    );
  },
};

export const VM_MIGRATION_COMMANDS: Record<string, Command> = {
  migrateVirtualMachine,
  findHostsForMigration,
};

// CloudStack's volume migration commands: migrateVolume (a volume of a stopped VM, or a detached
// one, to another pool), migrateVirtualMachineWithVolume (a stopped VM to another host, its volumes
// to the pools asked for) and findStoragePoolsForMigration (every pool, suitable or why not). They
// set Volume spec.pool and the VM's pinned host; the storage controller and the agents move the
// bytes. Whether a pool can take a volume is the storage controller's own rule (transferTarget),
// asked here before anything is written, so the API refuses what the controller would refuse.
import { needOf, poolUsages } from "../controllers/storage/pool-usage.ts";
import { transferTarget } from "../controllers/storage/transfer-target.ts";
import { displayState } from "../crds/display-state.ts";
import {
  type AsyncJob,
  Resources,
  rootVolumeName,
  type StoragePool,
  type VirtualMachine,
  type Volume,
} from "../crds/index.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, entityNotFound, type Json } from "./envelope.ts";
import type { Outcome } from "./jobs.ts";
import { jobObject, submitJob } from "./jobs.ts";
import { byId, ownedById, page, requireClusterRead } from "./listing.ts";
import { volumeHolder } from "./snapshot-commands.ts";
import { storagePoolView } from "./storage-views.ts";
import { virtualMachineView, volumeView } from "./views.ts";

/** A VM has at most this many volumes to map (its root and data volumes). */
const MAX_MIGRATE_TO = 32;

const keyOf = (o: { metadata: { namespace?: string; name?: string } }) =>
  `${o.metadata.namespace}/${o.metadata.name}`;

/**
 * Where the storage controller would move the volume if it asked for `pool`, its VM (if any) on
 * `user.status.host`: a target, or the reason it would refuse.
 */
export function migrationCheck(
  api: CloudStackApi,
  volume: Volume,
  pool: string | undefined,
  user: VirtualMachine | undefined,
): { target?: { pool: string; host: string }; problem?: string } {
  const diskOffering = (name: string | undefined) => (name ? api.diskOfferings.get(name) : undefined);
  const service =
    user && volume.spec.type === "ROOT" ? api.serviceOfferings.get(user.spec.serviceOffering) : undefined;
  const zonePools = api.storagePools.list().filter((p) => p.spec.zone === volume.spec.zone);
  const volumes = api.volumes.list();
  const volumesIn = (name: string) =>
    volumes.filter((v) => v.status?.pool === name || v.status?.transfer?.target?.pool === name);
  const { pool: _asked, ...spec } = volume.spec;
  return transferTarget({
    volume: { ...volume, spec: { ...spec, ...(pool ? { pool } : {}) } },
    need: needOf(volume, diskOffering, service),
    user,
    host: user?.status?.host ? api.hosts.get(user.status.host) : undefined,
    hostNamed: (name) => api.hosts.get(name),
    pools: poolUsages(zonePools, volumesIn, diskOffering, new Set([keyOf(volume)])),
  });
}

/** CloudStack moves a volume only while no running VM uses it (no storage motion here). */
function requireStoppedUser(vm: VirtualMachine | undefined, what: string): void {
  if (!vm) return;
  const state = displayState(vm);
  if (state !== "Stopped" || vm.spec.runStrategy !== "Halted")
    throw new ApiError(
      ERROR.PARAM,
      `${what}: VM ${vm.metadata.name} is ${state}; live migration of volumes is not supported, stop the VM first (stopVirtualMachine)`,
    );
}

/** CloudStack's volume checks before a move: Ready, not moving already, elsewhere than asked. */
function requireMovable(volume: Volume, pool: StoragePool): void {
  const phase = volume.status?.phase;
  if (phase !== "Ready" && phase !== "Attached")
    throw new ApiError(ERROR.PARAM, "Volume must be in ready state");
  if (volume.status?.pool === pool.metadata.name)
    throw new ApiError(
      ERROR.PARAM,
      `Volume ${volume.metadata.name} is already on the destination storage pool ${pool.metadata.name}`,
    );
  const moving = volume.status?.transfer?.target;
  if (moving)
    throw new ApiError(
      ERROR.PARAM,
      `Volume ${volume.metadata.name} is being moved to pool ${moving.pool}; wait for that move to finish`,
    );
  if (pool.spec.zone !== volume.spec.zone)
    throw new ApiError(
      ERROR.PARAM,
      `Storage pool ${pool.metadata.name} is in zone ${pool.spec.zone}, volume ${volume.metadata.name} in zone ${volume.spec.zone}`,
    );
}

function refuseProblem(check: { problem?: string }): void {
  if (check.problem)
    throw new ApiError(ERROR.PARAM, `Cannot migrate: ${check.problem.replace(/^volume [^:]+: /, "")}`);
}

function setVolumePool(call: Call, volume: Volume, pool: string): Promise<unknown> {
  return call.caller.client.mergePatch(
    Resources.volumes,
    volume.metadata.name as string,
    volume.metadata.namespace,
    { spec: { pool } },
  );
}

/** The job fails with the storage controller's reason when a move it was asked for cannot be made. */
function moveFailure(volume: Volume): Outcome {
  const moved = volume.status?.conditions?.find((c) => c.type === "Moved");
  if (moved?.status === "False" && moved.reason === "NoTargetPool")
    return { error: { code: ERROR.INSUFFICIENT_CAPACITY, text: moved.message } };
  return undefined;
}

const parameter = (job: AsyncJob, name: string) =>
  Object.entries(job.spec.parameters ?? {})
    .find(([key]) => key.toLowerCase() === name)?.[1]
    ?.toLowerCase();

const migrateVolume: Command = {
  async: true,
  async handler(call) {
    const volume = await ownedById(call, call.api.volumes, Resources.volumes, "volumeid");
    const pool = byId(call.api.storagePools, call, "storageid");
    if (call.params.get("newdiskofferingid"))
      throw new ApiError(
        ERROR.PARAM,
        "migrateVolume: changing the disk offering while migrating is not supported",
      );
    requireMovable(volume, pool);
    const user = volumeHolder(call.api, volume);
    if (call.params.flag("livemigrate") && user && displayState(user) !== "Stopped")
      throw new ApiError(ERROR.PARAM, "Live migration of volumes is not supported: stop the VM first");
    requireStoppedUser(user, `Volume ${volume.metadata.name} needs to be detached from VM or its VM stopped`);
    refuseProblem(migrationCheck(call.api, volume, pool.metadata.name as string, user));
    await setVolumePool(call, volume, pool.metadata.name as string);
    const job = await submitJob(call, "migrateVolume", { ...volume, kind: "Volume" });
    return { jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    const volume = jobObject(api.volumes, job, job.spec.target?.uid);
    if (!volume) return { error: { code: ERROR.INTERNAL, text: "the volume was deleted" } };
    const pool = api.storagePools.byIndex("uid", parameter(job, "storageid") ?? "")[0];
    if (pool && volume.status?.pool === pool.metadata.name && !volume.status?.transfer?.target)
      return { result: { volume: volumeView(volume, api, volumeHolder(api, volume)) } };
    return moveFailure(volume);
  },
};

/** The VM's volumes: its ROOT volume and its data volumes, as the cache shows them. */
function vmVolumes(api: CloudStackApi, vm: VirtualMachine): Volume[] {
  const namespace = vm.metadata.namespace as string;
  const names = [
    rootVolumeName(vm.metadata.name as string),
    ...(vm.spec.dataVolumes ?? []).map((d) => d.volume),
  ];
  return names.flatMap((name) => api.volume(namespace, name) ?? []);
}

/** migrateto[i].volume / migrateto[i].pool: each of the VM's volumes to a pool of its zone. */
function poolsAsked(call: Call, vm: VirtualMachine, volumes: Volume[]): Map<Volume, StoragePool> {
  const entries = call.params.map("migrateto");
  if (entries.length > MAX_MIGRATE_TO)
    throw new ApiError(ERROR.PARAM, `Invalid parameter migrateto: at most ${MAX_MIGRATE_TO} volumes`);
  const asked = new Map<Volume, StoragePool>();
  for (const entry of entries) {
    const volumeId = (entry.volume ?? "").toLowerCase();
    const poolId = (entry.pool ?? "").toLowerCase();
    if (!volumeId || !poolId)
      throw new ApiError(ERROR.PARAM, "Invalid parameter migrateto: each entry needs a volume and a pool");
    const volume = volumes.find((v) => v.metadata.uid === volumeId);
    if (!volume)
      throw new ApiError(ERROR.PARAM, `Volume ${volumeId} is not a volume of VM ${vm.metadata.name}`);
    const pool = call.api.storagePools.byIndex("uid", poolId)[0];
    if (!pool) throw entityNotFound("migrateto.pool", poolId);
    if (volume.status?.pool !== pool.metadata.name) asked.set(volume, pool);
  }
  return asked;
}

const migrateVirtualMachineWithVolume: Command = {
  async: true,
  async handler(call) {
    await requireClusterRead(call, Resources.hosts);
    const vm = await ownedById(call, call.api.vms, Resources.virtualMachines, "virtualmachineid");
    const host = call.params.uuid("hostid") ? byId(call.api.hosts, call, "hostid") : undefined;
    requireStoppedUser(vm, `VM ${vm.metadata.name} cannot be migrated with its volumes`);
    const volumes = vmVolumes(call.api, vm);
    const asked = poolsAsked(call, vm, volumes);
    const moving =
      host && host.metadata.name !== vm.status?.host ? (host.metadata.name as string) : undefined;
    if (!moving && asked.size === 0)
      throw new ApiError(
        ERROR.PARAM,
        `VM ${vm.metadata.name} is already on host ${vm.status?.host ?? "(none)"} and its volumes in the pools asked for`,
      );
    if (host && host.spec.zone !== vm.spec.zone)
      throw new ApiError(ERROR.PARAM, `Host ${host.metadata.name} is not in zone ${vm.spec.zone} of the VM`);
    if (host && (host.spec.maintenance || host.spec.allocationState === "Disabled"))
      throw new ApiError(ERROR.PARAM, `Host ${host.metadata.name} is in maintenance or disabled`);
    // Every volume must be able to follow the VM to its new host (to the pool asked, if any).
    const there = moving ? { ...vm, status: { ...vm.status, host: moving } } : vm;
    for (const [volume, pool] of asked) requireMovable(volume, pool);
    for (const volume of volumes)
      refuseProblem(
        migrationCheck(call.api, volume, asked.get(volume)?.metadata.name ?? volume.spec.pool, there),
      );
    for (const [volume, pool] of asked) await setVolumePool(call, volume, pool.metadata.name as string);
    if (moving)
      await call.caller.client.mergePatch(
        Resources.virtualMachines,
        vm.metadata.name as string,
        vm.metadata.namespace,
        {
          spec: { placement: { host: moving } },
        },
      );
    const job = await submitJob(call, "migrateVirtualMachineWithVolume", { ...vm, kind: "VirtualMachine" });
    return { jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    const vm = jobObject(api.vms, job, job.spec.target?.uid);
    if (!vm) return { error: { code: ERROR.INTERNAL, text: "the virtual machine was deleted" } };
    const scheduled = vm.status?.conditions?.find((c) => c.type === "Scheduled");
    if (scheduled?.status === "False" && scheduled.reason === "Unschedulable")
      return { error: { code: ERROR.INSUFFICIENT_CAPACITY, text: scheduled.message ?? "no host fits" } };
    const hostId = parameter(job, "hostid");
    const host = hostId ? api.hosts.byIndex("uid", hostId)[0] : undefined;
    if (host && vm.status?.host !== host.metadata.name) return undefined;
    const volumes = vmVolumes(api, vm);
    for (const volume of volumes) {
      const failed = moveFailure(volume);
      if (failed) return failed;
    }
    const settled = volumes.every(
      (v) => !v.status?.transfer?.target && (!v.spec.pool || v.status?.pool === v.spec.pool),
    );
    return settled ? { result: { virtualmachine: virtualMachineView(vm, api) } } : undefined;
  },
};

const findStoragePoolsForMigration: Command = {
  async handler(call) {
    await requireClusterRead(call, Resources.storagePools);
    const volume = await ownedById(call, call.api.volumes, Resources.volumes, "id");
    const user = volumeHolder(call.api, volume);
    const running = user && (displayState(user) !== "Stopped" || user.spec.runStrategy !== "Halted");
    const keyword = call.params.get("keyword")?.toLowerCase();
    const pools = call.api.storagePools
      .list()
      .filter((p) => p.spec.zone === volume.spec.zone && p.metadata.name !== volume.status?.pool)
      .filter((p) => !keyword || (p.metadata.name as string).includes(keyword))
      .sort((a, b) => (a.metadata.name as string).localeCompare(b.metadata.name as string));
    const views = pools.map((pool): Json => {
      const why = running
        ? `VM ${user?.metadata.name} is ${displayState(user as VirtualMachine)}: stop it first`
        : migrationCheck(call.api, volume, pool.metadata.name as string, user).problem;
      return {
        ...(storagePoolView(pool, call.api) as Record<string, Json>),
        suitableformigration: why === undefined,
        ...(why ? { notsuitablereason: why } : {}),
      };
    });
    return page(call, "storagepool", views);
  },
};

export const VOLUME_MIGRATION_COMMANDS: Record<string, Command> = {
  migrateVolume,
  migrateVirtualMachineWithVolume,
  findStoragePoolsForMigration,
};

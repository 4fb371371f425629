// CloudStack's primary storage commands over StoragePools: administrators add shared pools (a
// SharedMountPoint path or an NFS export), tag them, put them in maintenance and delete them;
// local pools are the storage controller's, one per host. Authorization is RBAC on storagepools:
// a user without it gets Kubernetes' 403 as CloudStack's 531.
import { Resources, type StoragePool } from "../crds/index.ts";
import { reaches } from "../crds/volume-placement.ts";
import type { Call, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { byId, filtered, page, patched, requireClusterRead } from "./listing.ts";
import { specToggleCommand } from "./spec-toggle.ts";
import { parsePoolUrl, tagList } from "./storage-input.ts";
import { poolPath, poolScope, poolState, storagePoolView } from "./storage-views.ts";

/** A pool name is a DNS label: it is the object's name and the last part of an NFS mount point. */
const POOL_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Parameters CloudStack has that Stratus cannot honour: given, they are refused, never ignored. */
function refuse(call: Call, command: string, why: Record<string, (value: string) => string | undefined>) {
  for (const [name, reason] of Object.entries(why)) {
    const value = call.params.get(name);
    const text = value === undefined || value === "" ? undefined : reason(value);
    if (text)
      throw new ApiError(ERROR.PARAM, `${command}: parameter ${name}=${value} is not supported: ${text}`);
  }
}

const always = (text: string) => () => text;

async function poolById(call: Call): Promise<StoragePool> {
  await requireClusterRead(call, Resources.storagePools);
  return byId(call.api.storagePools, call, "id");
}

const view = (call: Call, pool: StoragePool): Json => ({ storagepool: storagePoolView(pool, call.api) });

/** Sets spec.maintenance; the job ends when this replica's cache shows it. */
function maintenanceCommand(command: string, maintenance: boolean): Command {
  return specToggleCommand<StoragePool>({
    command,
    type: Resources.storagePools,
    field: "maintenance",
    value: maintenance,
    find: poolById,
    informer: (api) => api.storagePools,
    refusal: (pool) =>
      Boolean(pool.spec.maintenance) === maintenance
        ? `Primary storage ${pool.metadata.name} (id ${pool.metadata.uid}) is ${maintenance ? "already" : "not"} in maintenance; its state is ${poolState(pool)}`
        : undefined,
    done: () => true,
    result: (pool, api) => ({ storagepool: storagePoolView(pool, api) }),
  });
}

export const STORAGE_POOL_COMMANDS: Record<string, Command> = {
  listStoragePools: {
    async handler(call) {
      await requireClusterRead(call, Resources.storagePools);
      const { params, api } = call;
      const zoneId = params.uuid("zoneid");
      const scope = params.get("scope")?.toUpperCase();
      const path = params.get("path");
      const address = params.get("ipaddress");
      const state = params.get("status")?.toLowerCase();
      const host = params.uuid("hostid") ? byId(api.hosts, call, "hostid") : undefined;
      // Stratus has no pods or clusters: a filter by one matches nothing.
      const none = params.get("clusterid") !== undefined || params.get("podid") !== undefined;
      const pools = filtered(call, none ? [] : api.storagePools.list())
        .filter((p) => !zoneId || api.zones.get(p.spec.zone)?.metadata.uid === zoneId)
        .filter((p) => !scope || poolScope(p) === scope)
        .filter((p) => !path || poolPath(p) === path)
        .filter((p) => !address || p.spec.nfs?.server === address)
        .filter((p) => !state || poolState(p).toLowerCase() === state)
        .filter((p) => !host || reaches(p, host));
      return page(
        call,
        "storagepool",
        pools.map((p) => storagePoolView(p, api)),
      );
    },
  },
  createStoragePool: {
    async handler(call) {
      const { params, api } = call;
      const name = params.required("name").toLowerCase();
      const url = params.required("url");
      const zone = byId(api.zones, call, "zoneid");
      if (!POOL_NAME.test(name))
        throw new ApiError(
          ERROR.PARAM,
          `Invalid parameter name value=${name}: a storage pool name has 1 to 63 lower-case letters, digits and hyphens`,
        );
      if (name.startsWith("local-"))
        throw new ApiError(
          ERROR.PARAM,
          `Invalid parameter name value=${name}: names local-<host> belong to the hosts' local pools`,
        );
      refuse(call, "createStoragePool", {
        scope: (v) =>
          v.toUpperCase() === "ZONE"
            ? undefined
            : v.toUpperCase() === "HOST"
              ? "local pools are made for every host by Stratus itself"
              : "Stratus has no clusters; a shared pool is zone-wide (scope=ZONE)",
        clusterid: always("Stratus has no clusters; a shared pool is zone-wide"),
        podid: always("Stratus has no pods; a shared pool is zone-wide"),
        hypervisor: (v) => (v.toUpperCase() === "KVM" ? undefined : "Stratus hosts are KVM"),
        provider: (v) => (v === "DefaultPrimary" ? undefined : "Stratus has the default provider only"),
        managed: (v) => (v.toLowerCase() === "true" ? "Stratus has no managed storage" : undefined),
        capacitybytes: always("the size is what the hosts see of the pool"),
        capacityiops: always("Stratus does not limit a pool's IOPS"),
        istagarule: (v) => (v.toLowerCase() === "true" ? "tags are a list, not a rule" : undefined),
      });
      const location = parsePoolUrl(url, name);
      const tags = tagList("tags", params.get("tags"));
      const pool = await call.caller.client.create<StoragePool>(Resources.storagePools, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "StoragePool",
        metadata: { name, annotations: { "stratus.io/created-by": "cloudstack-api" } },
        spec: {
          zone: zone.metadata.name as string,
          type: location.type,
          path: location.path,
          ...(location.nfs ? { nfs: location.nfs } : {}),
          ...(tags?.length ? { tags } : {}),
        },
      });
      return view(call, pool);
    },
  },
  updateStoragePool: {
    async handler(call) {
      const pool = await poolById(call);
      refuse(call, "updateStoragePool", {
        enabled: (v) =>
          v.toLowerCase() === "true"
            ? undefined
            : "Stratus stops new volumes in a pool with enableStorageMaintenance",
        name: (v) => (v === pool.metadata.name ? undefined : "a storage pool cannot be renamed"),
        url: always("a pool's location cannot change; add a new pool"),
        capacitybytes: always("the size is what the hosts see of the pool"),
        capacityiops: always("Stratus does not limit a pool's IOPS"),
        istagarule: (v) => (v.toLowerCase() === "true" ? "tags are a list, not a rule" : undefined),
      });
      if (call.params.map("details").length > 0)
        throw new ApiError(ERROR.PARAM, "updateStoragePool: details are not supported");
      const tags = tagList("tags", call.params.get("tags"));
      const updated = await patched(
        call,
        Resources.storagePools,
        pool,
        tags === undefined ? undefined : { spec: { tags: tags.length > 0 ? tags : null } },
      );
      return view(call, updated);
    },
  },
  deleteStoragePool: {
    async handler(call) {
      const pool = await poolById(call);
      const name = pool.metadata.name as string;
      if (pool.spec.type === "local")
        throw new ApiError(
          ERROR.PARAM,
          `Storage pool ${name} is the local pool of host ${pool.spec.host}: it goes away with its Host`,
        );
      // The storage controller guards the pool too; saying so here gives the client the reason.
      const cached = call.api.volumes.list().filter((v) => v.status?.pool === name).length;
      const volumes = Math.max(cached, pool.status?.volumes ?? 0);
      if (volumes > 0)
        throw new ApiError(
          ERROR.RESOURCE_IN_USE,
          `Cannot delete storage pool ${name}: it holds ${volumes} volume${volumes === 1 ? "" : "s"} (Stratus never deletes volumes with their pool, forced or not); delete or move them first`,
        );
      await call.caller.client.delete(Resources.storagePools, name, undefined, {
        uid: pool.metadata.uid as string,
      });
      return { success: true };
    },
  },
  enableStorageMaintenance: maintenanceCommand("enableStorageMaintenance", true),
  cancelStorageMaintenance: maintenanceCommand("cancelStorageMaintenance", false),
};

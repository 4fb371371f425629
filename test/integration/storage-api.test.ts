// Primary storage through the CloudStack API, as a real process driven by the real Python `cs`
// client: an administrator adds SharedMountPoint and NFS pools, tags them, puts one in
// maintenance and back (async jobs), and deletes it once no volume is in it; an ordinary user gets
// CloudStack's permission error from Kubernetes' RBAC. No operator runs: where the storage
// controller and the agents would write status, the test writes it.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type StoragePool, type Volume, type Zone } from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import { type Account, adminAndUser, hasCs, cs as runCs, signedRequest } from "./cloudstack-accounts.ts";
import { logsOnFailure, type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `sp-zone-${suffix}`;
const SHARED = `shared-${suffix}`;
const NFS = `nfs-${suffix}`;

type Row = Record<string, unknown>;

describe.skipIf(!hasCs)("primary storage through the CloudStack API (needs python3-cs)", () => {
  let client: KubeClient;
  let endpoint: string;
  let api: StratusProcess;
  let admin: Account;
  let user: Account;
  let zoneId: string;
  const clusterObjects: { type: typeof Resources.storagePools; name: string }[] = [];

  const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
    runCs(endpoint, account, command, args);
  const raw = (account: Account, params: Record<string, string>) => signedRequest(endpoint, account, params);
  /** The error a request gets: its HTTP status and CloudStack's errortext. */
  async function refused(account: Account, params: Record<string, string>) {
    const response = await raw(account, params);
    const body = response.body[`${(params.command as string).toLowerCase()}response`] ?? {};
    return { status: response.status, errorcode: body.errorcode, errortext: String(body.errortext) };
  }
  async function pools(account: Account, args: Record<string, string>) {
    const listed = await cs(account, "listStoragePools", args);
    expect(listed.stderr).toBe("");
    return (listed.json.storagepool ?? []) as Row[];
  }

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "keys");
    ({ admin, user } = await adminAndUser(client, { keysNamespace, suffix, prefix: "storage" }));
    const zone = await client.create<Zone>(Resources.zones, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Zone",
      metadata: { name: ZONE },
      spec: {},
    });
    zoneId = zone.metadata.uid as string;
    const started = await startApiServer({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      identity: `sp-api-${suffix}`,
      keysNamespace,
    });
    api = started.process;
    endpoint = started.endpoint;
  });

  logsOnFailure(() => [api]);

  afterAll(async () => {
    await api?.stop("SIGKILL");
    for (const { type, name } of clusterObjects) await client.delete(type, name).catch(() => undefined);
    await client.delete(Resources.zones, ZONE).catch(() => undefined);
    await client?.close();
  });

  it("adds a SharedMountPoint pool and an NFS pool, and lists them with CloudStack's fields", async () => {
    const created = await cs(admin, "createStoragePool", {
      zoneid: zoneId,
      name: SHARED,
      url: "SharedMountPoint:///srv/stratus-shared",
      scope: "zone",
      tags: "ssd, fast",
    });
    expect(created.stderr).toBe("");
    clusterObjects.push({ type: Resources.storagePools, name: SHARED });
    expect(created.json.storagepool).toMatchObject({
      name: SHARED,
      zoneid: zoneId,
      zonename: ZONE,
      type: "SharedMountPoint",
      scope: "ZONE",
      path: "/srv/stratus-shared",
      tags: "ssd,fast",
      hypervisor: "KVM",
      state: "Initialized",
      disksizeallocated: 0,
    });
    const object = await client.get<StoragePool>(Resources.storagePools, SHARED);
    expect(object.spec).toMatchObject({
      zone: ZONE,
      type: "sharedMountPoint",
      path: "/srv/stratus-shared",
      tags: ["ssd", "fast"],
    });
    expect((created.json.storagepool as Row).id).toBe(object.metadata.uid);

    const nfs = await cs(admin, "createStoragePool", {
      zoneid: zoneId,
      name: NFS,
      url: "nfs://10.0.0.5/export/primary",
    });
    expect(nfs.stderr).toBe("");
    clusterObjects.push({ type: Resources.storagePools, name: NFS });
    expect(nfs.json.storagepool).toMatchObject({
      name: NFS,
      type: "NetworkFilesystem",
      ipaddress: "10.0.0.5",
      path: "/export/primary",
      scope: "ZONE",
    });
    expect((await client.get<StoragePool>(Resources.storagePools, NFS)).spec).toMatchObject({
      type: "nfs",
      path: `/mnt/stratus/${NFS}`,
      nfs: { server: "10.0.0.5", exportPath: "/export/primary" },
    });

    await waitFor(
      "both pools in the API's cache",
      async () => (await pools(admin, { zoneid: zoneId })).length === 2,
    );
    expect((await pools(admin, { name: SHARED })).map((p) => p.name)).toEqual([SHARED]);
    expect((await pools(admin, { zoneid: zoneId, keyword: "nfs" })).map((p) => p.name)).toEqual([NFS]);
    expect((await pools(admin, { zoneid: zoneId, path: "/export/primary" })).map((p) => p.name)).toEqual([
      NFS,
    ]);
    expect((await pools(admin, { zoneid: zoneId, scope: "HOST" })).length).toBe(0);
    expect((await pools(admin, { id: object.metadata.uid as string })).map((p) => p.name)).toEqual([SHARED]);
  });

  it("refuses bad input with 431 and what is accepted", async () => {
    const bad = (args: Record<string, string>) =>
      refused(admin, { command: "createStoragePool", zoneid: zoneId, name: `bad-${suffix}`, ...args });
    const rbd = await bad({ url: "rbd://monitor/pool" });
    expect(rbd).toMatchObject({ status: 431, errorcode: 431 });
    expect(rbd.errortext).toBe(
      "Invalid parameter url value=rbd://monitor/pool: the scheme rbd is not supported. Stratus supports SharedMountPoint:///<path> (or sharedmountpoint://<any host>/<path>) and nfs://<server>/<export path>",
    );
    expect((await bad({ url: "SharedMountPoint:///srv/../etc" })).errortext).toContain("may not contain ..");
    expect((await bad({ url: "SharedMountPoint:///srv/x", scope: "HOST" })).errortext).toContain(
      "local pools are made for every host",
    );
    expect(await bad({ url: "SharedMountPoint:///srv/x", name: "x".repeat(64) })).toMatchObject({
      status: 431,
      errortext: expect.stringContaining("1 to 63 lower-case letters"),
    });
    expect(await bad({ url: "SharedMountPoint:///srv/x", tags: "t".repeat(64) })).toMatchObject({
      status: 431,
      errortext: expect.stringContaining("at most 63 characters"),
    });
    const unknownZone = await bad({
      url: "SharedMountPoint:///srv/x",
      zoneid: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    });
    expect(unknownZone.errortext).toMatch(
      /^Invalid parameter zoneid value=7c9e6679-7425-40de-944b-e07fc1f90ae7 due to/,
    );
    expect(
      (await refused(admin, { command: "createStoragePool", zoneid: zoneId, name: "x" })).errortext,
    ).toBe("Unable to execute API command createstoragepool due to missing parameter url");
    expect(await client.get(Resources.storagePools, `bad-${suffix}`).catch(() => "absent")).toBe("absent");
  });

  it("updates tags, and refuses to disable allocation any other way than maintenance", async () => {
    const [pool] = await pools(admin, { name: SHARED });
    const updated = await cs(admin, "updateStoragePool", { id: pool?.id as string, tags: "gold" });
    expect(updated.json.storagepool).toMatchObject({ id: pool?.id, tags: "gold" });
    expect((await client.get<StoragePool>(Resources.storagePools, SHARED)).spec.tags).toEqual(["gold"]);
    const disabled = await refused(admin, {
      command: "updateStoragePool",
      id: pool?.id as string,
      enabled: "false",
    });
    expect(disabled.status).toBe(431);
    expect(disabled.errortext).toContain("enableStorageMaintenance");
    const renamed = await refused(admin, {
      command: "updateStoragePool",
      id: pool?.id as string,
      name: "other",
    });
    expect(renamed.errortext).toContain("cannot be renamed");
  });

  it("puts a pool in maintenance and back through async jobs", async () => {
    // What the storage controller reports once every host reaches the pool.
    await client.mergePatch(
      Resources.storagePools,
      SHARED,
      undefined,
      {
        status: {
          capacity: "100Gi",
          available: "60Gi",
          allocated: "10Gi",
          conditions: [
            {
              type: "Ready",
              status: "True",
              reason: "Reachable",
              message: "every host reaches the pool",
              lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
            },
          ],
        },
      },
      "status",
    );
    const [pool] = await waitFor("the pool Up", async () => {
      const listed = await pools(admin, { name: SHARED });
      return listed[0]?.state === "Up" ? listed : undefined;
    });
    expect(pool).toMatchObject({
      disksizetotal: 100 * 1024 ** 3,
      disksizeused: 40 * 1024 ** 3,
      disksizeallocated: 10 * 1024 ** 3,
    });
    const id = pool?.id as string;

    const submitted = await raw(admin, { command: "enableStorageMaintenance", id });
    expect(submitted.body.enablestoragemaintenanceresponse).toEqual({ jobid: expect.any(String) });
    const job = await waitFor("the maintenance job to finish", async () => {
      const result = await cs(admin, "queryAsyncJobResult", {
        jobid: submitted.body.enablestoragemaintenanceresponse?.jobid as string,
      });
      return result.json.jobstatus === 1 ? result.json : undefined;
    });
    expect(job).toMatchObject({
      jobresultcode: 0,
      jobinstancetype: "StoragePool",
      jobinstanceid: id,
      jobresult: { storagepool: { id, state: "Maintenance" } },
    });
    expect((await client.get<StoragePool>(Resources.storagePools, SHARED)).spec.maintenance).toBe(true);
    expect((await refused(admin, { command: "enableStorageMaintenance", id })).errortext).toContain(
      "is already in maintenance",
    );

    // cs waits for the job itself and prints its result.
    const cancelled = await cs(admin, "cancelStorageMaintenance", { id });
    expect(cancelled.json).toMatchObject({ storagepool: { id, state: "Up" } });
    expect((await client.get<StoragePool>(Resources.storagePools, SHARED)).spec.maintenance).toBe(false);
    expect((await refused(admin, { command: "cancelStorageMaintenance", id })).errortext).toContain(
      "is not in maintenance",
    );
  });

  it("gives an ordinary user CloudStack's permission error", async () => {
    const [pool] = await pools(admin, { name: SHARED });
    for (const params of [
      { command: "listStoragePools" },
      {
        command: "createStoragePool",
        zoneid: zoneId,
        name: `mine-${suffix}`,
        url: "SharedMountPoint:///srv/m",
      },
      { command: "updateStoragePool", id: pool?.id as string, tags: "mine" },
      { command: "enableStorageMaintenance", id: pool?.id as string },
      { command: "deleteStoragePool", id: pool?.id as string },
      { command: "createDiskOffering", name: `mine-${suffix}`, displaytext: "mine", disksize: "1" },
    ])
      expect(await refused(user, params), params.command).toMatchObject({ status: 531, errorcode: 531 });
    expect((await client.get<StoragePool>(Resources.storagePools, SHARED)).spec).not.toHaveProperty(
      "maintenance",
      true,
    );
  });

  it("creates offerings with a storage type and tags, and lists where a volume lives", async () => {
    const disk = await cs(admin, "createDiskOffering", {
      name: `shared-ssd-${suffix}`,
      displaytext: "Shared SSD",
      disksize: "2",
      storagetype: "shared",
      tags: "ssd",
    });
    expect(disk.json.diskoffering).toMatchObject({ disksize: 2, storagetype: "shared", tags: "ssd" });
    const service = await cs(admin, "createServiceOffering", {
      name: `local-small-${suffix}`,
      displaytext: "Small, local root disk",
      cpunumber: "1",
      memory: "256",
      storagetype: "local",
      tags: "fast",
    });
    expect(service.json.serviceoffering).toMatchObject({
      cpunumber: 1,
      memory: 256,
      storagetype: "local",
      storagetags: "fast",
    });
    const ceph = await refused(admin, {
      command: "createDiskOffering",
      name: `ceph-${suffix}`,
      displaytext: "ceph",
      disksize: "1",
      storagetype: "ceph",
    });
    expect(ceph).toMatchObject({
      status: 431,
      errortext: "Invalid parameter storagetype value=ceph: it is local or shared",
    });
    await client.delete(Resources.diskOfferings, `ceph-${suffix}`).catch(() => undefined);

    // A data volume whose disk the agent reports in the shared pool.
    const volume = await client.create<Volume>(Resources.volumes, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Volume",
      metadata: { name: "data-1", namespace: admin.namespace },
      spec: { zone: ZONE, type: "DATADISK", diskOffering: `shared-ssd-${suffix}` },
    });
    await client.mergePatch(
      Resources.volumes,
      "data-1",
      admin.namespace,
      { status: { phase: "Ready", pool: SHARED, poolType: "sharedMountPoint", capacity: "2Gi" } },
      "status",
    );
    const [pool] = await pools(admin, { name: SHARED });
    const listed = await waitFor("the volume's pool in listVolumes", async () => {
      const result = await cs(admin, "listVolumes", { id: volume.metadata.uid as string });
      const [row] = (result.json.volume ?? []) as Row[];
      return row?.storage ? row : undefined;
    });
    expect(listed).toMatchObject({
      storage: SHARED,
      storageid: pool?.id,
      storagetype: "shared",
      diskofferingid: (disk.json.diskoffering as Row).id,
      diskofferingname: `shared-ssd-${suffix}`,
    });

    // The pool holds the volume: Stratus refuses to delete it, forced or not.
    for (const forced of ["false", "true"]) {
      const inUse = await refused(admin, { command: "deleteStoragePool", id: pool?.id as string, forced });
      expect(inUse.status).toBe(536);
      expect(inUse.errortext).toContain(`Cannot delete storage pool ${SHARED}: it holds 1 volume`);
    }
    expect((await pools(admin, { name: SHARED })).length).toBe(1);
    for (const name of [`shared-ssd-${suffix}`]) await client.delete(Resources.diskOfferings, name);
    await client.delete(Resources.serviceOfferings, `local-small-${suffix}`);
    // Deleted, and released as its agent and the storage controller would once the disk is gone.
    await client.delete(Resources.volumes, "data-1", admin.namespace);
    await client.mergePatch(Resources.volumes, "data-1", admin.namespace, { metadata: { finalizers: null } });
  });

  it("deletes a pool no volume is in", async () => {
    const [pool] = await pools(admin, { name: SHARED });
    const deleted = await waitFor("the pool to be deletable once its volume is gone", async () => {
      const result = await cs(admin, "deleteStoragePool", { id: pool?.id as string });
      // cs prints the error envelope too: only a success ends the wait.
      return result.json.success === true ? result.json : undefined;
    });
    expect(deleted).toEqual({ success: true });
    await waitFor("the pool gone", async () => (await pools(admin, { name: SHARED })).length === 0);
    const gone = await refused(admin, { command: "deleteStoragePool", id: pool?.id as string });
    expect(gone.errortext).toMatch(/^Invalid parameter id value=.* due to incorrect long value format/);
  });
});

// Volume migration through the CloudStack API, as a real process driven by the real Python `cs`
// client: an administrator finds the pools a volume can go to (and why not the others), migrates a
// detached volume and a stopped VM with its volumes (async jobs that end when the disks are where
// they were asked to be), and is refused a running VM's volume; makes a template from a volume and
// is refused its deletion while a VM uses it; another account reaches none of it.
// No operator runs: where the storage controller and the agents would write status, the test does.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TEMPLATE_IMAGES_FINALIZER } from "../../crds/finalizers.ts";
import { Resources, type Template, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { localPoolName } from "../../crds/kinds/storage-pool.ts";
import { KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import {
  type Account,
  adminAndUser,
  hasCs,
  makeAccount,
  cs as runCs,
  signedRequest,
} from "./cloudstack-accounts.ts";
import { logsOnFailure, type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `mig-zone-${suffix}`;
const [H1, H2] = [`mig-a-${suffix}`, `mig-b-${suffix}`];
const SHARED = `mig-shared-${suffix}`;
const FULL = `mig-full-${suffix}`;

type Row = Record<string, unknown>;

describe.skipIf(!hasCs)("volume migration through the CloudStack API (needs python3-cs)", () => {
  let client: KubeClient;
  let endpoint: string;
  let api: StratusProcess;
  let admin: Account;
  let bob: Account;
  const uid = new Map<string, string>();

  const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
    runCs(endpoint, account, command, args);
  async function refused(account: Account, params: Record<string, string>) {
    const response = await signedRequest(endpoint, account, params);
    const body = response.body[`${(params.command as string).toLowerCase()}response`] ?? {};
    return { status: response.status, errortext: String(body.errortext) };
  }
  const writeStatus = (type: ResourceType, name: string, namespace: string | undefined, status: Row) =>
    client.mergePatch(type, name, namespace, { status }, "status");
  const onDisk = (pool: string, host: string) => ({
    phase: "Ready",
    pool,
    host,
    poolType: pool.startsWith("local-") ? "local" : "sharedMountPoint",
    capacity: "1Gi",
  });
  async function volume(name: string, status: Row) {
    const made = await client.create<Volume>(Resources.volumes, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Volume",
      metadata: { name, namespace: admin.namespace },
      spec: { zone: ZONE, size: "1Gi" },
    });
    uid.set(name, made.metadata.uid as string);
    await writeStatus(Resources.volumes, name, admin.namespace, status);
  }
  async function vm(name: string, runStrategy: "Always" | "Halted", dataVolume: string) {
    const made = await client.create<VirtualMachine>(Resources.virtualMachines, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VirtualMachine",
      metadata: { name, namespace: admin.namespace },
      spec: {
        zone: ZONE,
        serviceOffering: "none",
        template: "none",
        runStrategy,
        dataVolumes: [{ name: "data", volume: dataVolume }],
      },
    });
    uid.set(name, made.metadata.uid as string);
    await writeStatus(Resources.virtualMachines, name, admin.namespace, {
      host: H1,
      state: runStrategy === "Always" ? "Running" : "Stopped",
    });
    await writeStatus(Resources.volumes, dataVolume, admin.namespace, {
      attachedTo: { virtualMachine: name, device: "vdb" },
    });
  }
  /** An async command as a client that does not wait: its jobid (cs would wait for the job itself). */
  async function submit(params: Record<string, string>) {
    const response = await signedRequest(endpoint, admin, params);
    const body = response.body[`${(params.command as string).toLowerCase()}response`] ?? {};
    expect(body).toMatchObject({ jobid: expect.any(String) });
    return body as { jobid: string };
  }
  async function finished(jobid: string) {
    return waitFor(`job ${jobid}`, async () => {
      const result = await cs(admin, "queryAsyncJobResult", { jobid });
      return result.json.jobstatus === 0 ? undefined : result.json;
    });
  }
  const idOf = (name: string) => uid.get(name) as string;
  let poolIds: Map<string, string>;

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "mig-keys");
    ({ admin } = await adminAndUser(client, { keysNamespace, suffix, prefix: "mig" }));
    bob = await makeAccount(client, { keysNamespace, name: "mig-bob", suffix, clusterRoles: [] });
    await client.create(Resources.zones, { metadata: { name: ZONE }, spec: {} });
    for (const host of [H1, H2]) {
      await client.create(Resources.hosts, { metadata: { name: host }, spec: { zone: ZONE } });
      await writeStatus(Resources.hosts, host, undefined, {
        storagePools: [localPoolName(host), SHARED, FULL].map((name) => ({
          name,
          ready: true,
          capacity: name === FULL ? "1Mi" : "100Gi",
        })),
      });
      await client.create(Resources.storagePools, {
        metadata: { name: localPoolName(host) },
        spec: { zone: ZONE, type: "local", host },
      });
    }
    for (const name of [SHARED, FULL])
      await client.create(Resources.storagePools, {
        metadata: { name },
        spec: { zone: ZONE, type: "sharedMountPoint", path: `/mnt/${name}` },
      });
    const started = await startApiServer({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      identity: `mig-api-${suffix}`,
      keysNamespace,
    });
    api = started.process;
    endpoint = started.endpoint;
    poolIds = await waitFor("the pools listed", async () => {
      const listed = (await cs(admin, "listStoragePools")).json.storagepool as Row[] | undefined;
      const ids = new Map((listed ?? []).map((p) => [p.name as string, p.id as string]));
      return ids.size >= 4 && ids.has(FULL) ? ids : undefined;
    });
  });

  logsOnFailure(() => [api]);

  afterAll(async () => {
    await api?.stop("SIGKILL");
    for (const name of [localPoolName(H1), localPoolName(H2), SHARED, FULL])
      await client.delete(Resources.storagePools, name).catch(() => undefined);
    for (const host of [H1, H2]) await client.delete(Resources.hosts, host).catch(() => undefined);
    await client.delete(Resources.zones, ZONE).catch(() => undefined);
    await client?.close();
  });

  it("finds the pools a detached volume can go to, and says why not the others", async () => {
    await volume("loose", onDisk(localPoolName(H1), H1));
    const found = await waitFor("the volume in the cache", async () => {
      const result = await cs(admin, "findStoragePoolsForMigration", { id: idOf("loose") });
      return (result.json.storagepool as Row[] | undefined)?.length === 3 ? result.json : undefined;
    });
    const byName = new Map((found.storagepool as Row[]).map((p) => [p.name, p]));
    expect(byName.get(localPoolName(H2))).toMatchObject({ suitableformigration: true, scope: "HOST" });
    expect(byName.get(SHARED)).toMatchObject({ suitableformigration: true, scope: "ZONE" });
    expect(byName.get(FULL)).toMatchObject({ suitableformigration: false });
    expect(byName.get(FULL)?.notsuitablereason).toContain("too little room");
    expect(byName.has(localPoolName(H1))).toBe(false); // where it is now
    // Administrators only, as CloudStack's.
    expect((await refused(bob, { command: "findStoragePoolsForMigration", id: idOf("loose") })).status).toBe(
      531,
    );
  });

  it("migrates a detached volume: the job ends when its disk is in the new pool", async () => {
    const submitted = await submit({
      command: "migrateVolume",
      volumeid: idOf("loose"),
      storageid: poolIds.get(localPoolName(H2)) as string,
    });
    const asked = await client.get<Volume>(Resources.volumes, "loose", admin.namespace);
    expect(asked.spec.pool).toBe(localPoolName(H2));
    // The storage controller and the agents did their part: the disk is there.
    await writeStatus(Resources.volumes, "loose", admin.namespace, onDisk(localPoolName(H2), H2));
    const job = await finished(submitted.jobid);
    expect(job).toMatchObject({
      jobstatus: 1,
      jobresult: { volume: { id: idOf("loose"), storage: localPoolName(H2) } },
    });

    const again = await refused(admin, {
      command: "migrateVolume",
      volumeid: idOf("loose"),
      storageid: poolIds.get(localPoolName(H2)) as string,
    });
    expect(again).toMatchObject({ status: 431 });
    expect(again.errortext).toContain("is already on the destination storage pool");
    const full = await refused(admin, {
      command: "migrateVolume",
      volumeid: idOf("loose"),
      storageid: poolIds.get(FULL) as string,
    });
    expect(full.errortext).toBe(`Cannot migrate: pool ${FULL} has too little room`);
    // Another account cannot move it: the volume's id is unknown there.
    const foreign = {
      command: "migrateVolume",
      volumeid: idOf("loose"),
      storageid: poolIds.get(SHARED) as string,
    };
    expect((await refused(bob, foreign)).status).toBe(431);
  });

  it("refuses a running VM's volume (no live migration), and a stopped VM's into another host's local pool", async () => {
    await volume("busy", onDisk(localPoolName(H1), H1));
    await vm("runner", "Always", "busy");
    const running = await waitFor("the VM in the cache", async () => {
      const r = await refused(admin, {
        command: "migrateVolume",
        volumeid: idOf("busy"),
        storageid: poolIds.get(SHARED) as string,
      });
      return r.errortext.includes("runner") ? r : undefined;
    });
    expect(running.status).toBe(431);
    expect(running.errortext).toContain("live migration of volumes is not supported, stop the VM first");
    const withVm = await refused(admin, {
      command: "migrateVirtualMachineWithVolume",
      virtualmachineid: idOf("runner"),
      hostid: "",
    });
    expect(withVm.errortext).toContain("live migration of volumes is not supported");

    await client.mergePatch(Resources.virtualMachines, "runner", admin.namespace, {
      spec: { runStrategy: "Halted" },
    });
    // Its agent stopped it.
    await writeStatus(Resources.virtualMachines, "runner", admin.namespace, { state: "Stopped" });
    const elsewhere = await waitFor("the VM stopped in the cache", async () => {
      const r = await refused(admin, {
        command: "migrateVolume",
        volumeid: idOf("busy"),
        storageid: poolIds.get(localPoolName(H2)) as string,
      });
      if (!r.errortext.startsWith("Cannot migrate")) throw new Error(r.errortext);
      return r;
    });
    expect(elsewhere.errortext).toContain(`is local to host ${H2}, but its VM is on host ${H1}`);
  });

  it("makes a template from a detached volume, and refuses to delete one a VM uses", async () => {
    const submitted = await submit({
      command: "createTemplate",
      name: `golden-${suffix}`,
      displaytext: "Golden image",
      ostypeid: "Other Linux (64-bit)",
      volumeid: idOf("loose"),
    });
    const made = await client.get<Template>(Resources.templates, `golden-${suffix}`);
    expect(made.spec.source).toEqual({ volume: { namespace: admin.namespace, name: "loose" } });
    // The agent holding the disk wrote the image.
    const image = {
      zone: ZONE,
      host: H2,
      path: "/secondary/templates/t.qcow2",
      sha256: "c".repeat(64),
      bytes: 4096,
    };
    await writeStatus(Resources.templates, `golden-${suffix}`, undefined, { image });
    const job = await finished(submitted.jobid);
    expect(job).toMatchObject({
      jobstatus: 1,
      jobresult: { template: { name: `golden-${suffix}`, isready: true, size: 4096 } },
    });
    // Another account cannot read the volume: its id is unknown there.
    const foreign = {
      command: "createTemplate",
      name: "stolen",
      displaytext: "x",
      ostypeid: "x",
      volumeid: idOf("loose"),
    };
    expect((await refused(bob, foreign)).status).toBe(431);

    await client.create(Resources.virtualMachines, {
      metadata: { name: "from-golden", namespace: admin.namespace },
      spec: { zone: ZONE, serviceOffering: "none", template: `golden-${suffix}` },
    });
    // Only once the API component's cache shows the VM: a delete tried before would succeed.
    await waitFor("the VM in the API's cache", async () => {
      const listed = await cs(admin, "listVirtualMachines", { name: "from-golden" });
      return ((listed.json.virtualmachine ?? []) as unknown[]).length === 1;
    });
    const inUse = await refused(admin, {
      command: "deleteTemplate",
      id: made.metadata.uid as string,
      forced: "true",
    });
    expect(inUse.status).toBe(431);
    expect(inUse.errortext).toBe(
      `Unable to delete template with id: ${made.metadata.uid} because VM instances: [${admin.namespace}/from-golden] are using it.`,
    );
    await client.delete(Resources.virtualMachines, "from-golden", admin.namespace);
    await client.mergePatch(Resources.virtualMachines, "from-golden", admin.namespace, {
      metadata: { finalizers: [] },
    });
    const jobid = await waitFor("the template deletable", async () => {
      const response = await signedRequest(endpoint, admin, {
        command: "deleteTemplate",
        id: made.metadata.uid as string,
      });
      return response.body.deletetemplateresponse?.jobid as string | undefined;
    });
    // The job waits for the template to be gone: storage releases it once its images are removed.
    const deleting = await client.get<Template>(Resources.templates, `golden-${suffix}`);
    expect(deleting.metadata.finalizers).toEqual([TEMPLATE_IMAGES_FINALIZER]);
    await client.mergePatch(Resources.templates, `golden-${suffix}`, undefined, {
      metadata: { finalizers: [] },
    });
    expect(await finished(jobid)).toMatchObject({ jobstatus: 1, jobresult: { success: true } });
  });

  it("migrates a stopped VM to another host with its volume into the pool asked for", async () => {
    const hostId = (await client.get<KubeObject>(Resources.hosts, H2)).metadata.uid as string;
    const submitted = await submit({
      command: "migrateVirtualMachineWithVolume",
      virtualmachineid: idOf("runner"),
      hostid: hostId,
      "migrateto[0].volume": idOf("busy"),
      "migrateto[0].pool": poolIds.get(SHARED) as string,
    });
    const vmNow = await client.get<VirtualMachine>(Resources.virtualMachines, "runner", admin.namespace);
    expect(vmNow.spec.placement?.host).toBe(H2);
    expect((await client.get<Volume>(Resources.volumes, "busy", admin.namespace)).spec.pool).toBe(SHARED);
    // compute placed it on H2 and the disk arrived in the shared pool.
    await writeStatus(Resources.virtualMachines, "runner", admin.namespace, { host: H2 });
    await writeStatus(Resources.volumes, "busy", admin.namespace, onDisk(SHARED, H2));
    const job = await finished(submitted.jobid);
    expect(job).toMatchObject({ jobstatus: 1, jobresult: { virtualmachine: { id: idOf("runner") } } });
    expect(
      (await refused(bob, { command: "migrateVirtualMachineWithVolume", virtualmachineid: idOf("runner") }))
        .status,
    ).toBe(531);
  });
});

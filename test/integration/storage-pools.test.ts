// The storage controller against the real API server, with the agents' writes made by the test:
// each host gets its local pool, pools roll up from the hosts' reports and the volumes, a disk whose
// VM went to a host that cannot reach it gets a transfer target (dropped once it arrived), and a
// pool that still holds a volume is not deleted.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STORAGE_POOL_FINALIZER } from "../../crds/finalizers.ts";
import { Resources, type StoragePool, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { localPoolName } from "../../crds/kinds/storage-pool.ts";
import { KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import { type StratusProcess, startOperator } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor, waitUntilGone } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `pools-${suffix}`;
const [H1, H2] = [`pools-a-${suffix}`, `pools-b-${suffix}`];
const NFS = `pools-nfs-${suffix}`;
const AGENT = { fieldManager: "test-agent", subresource: "status" } as const;
const typeMeta = <K extends string>(kind: K) => ({ apiVersion: "stratus.io/v1alpha1" as const, kind });

describe("storage pools and volume moves", () => {
  let client: KubeClient;
  let namespace: string;
  let operator: StratusProcess;
  let vm: VirtualMachine;

  /** Writes status as the test's stand-in for an agent (its own field manager). */
  const agentWrites = (
    type: ResourceType,
    metadata: KubeObject["metadata"],
    status: Record<string, unknown>,
  ) => client.apply(type, { metadata, status }, AGENT);
  const pool = (name: string) => client.get<StoragePool>(Resources.storagePools, name);
  const volume = () => client.get<Volume>(Resources.volumes, "web-root", namespace);

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "pools");
    for (const host of [H1, H2]) {
      await client.create(Resources.hosts, { metadata: { name: host }, spec: { zone: ZONE } });
      await agentWrites(
        Resources.hosts,
        { name: host },
        {
          storagePools: [
            { name: localPoolName(host), ready: true, capacity: "20Gi", available: "18Gi" },
            { name: NFS, ready: true, capacity: "1Ti", available: "900Gi" },
          ],
          conditions: [
            {
              type: "Ready",
              status: "True",
              reason: "Test",
              message: "",
              lastTransitionTime: new Date().toISOString(),
            },
          ],
        },
      );
    }
    operator = await startOperator({
      kubeconfigPath: controlPlane.kubeconfigPath,
      identity: `pools-${suffix}`,
      args: ["--components=storage", "--leader-elect=false"],
    });
  });

  afterAll(async () => {
    await operator?.stop("SIGKILL");
    for (const [type, name, ns] of [
      [Resources.volumes, "web-root", namespace],
      [Resources.virtualMachines, "web", namespace],
      [Resources.storagePools, NFS, undefined],
    ] as const)
      await client.mergePatch(type, name, ns, { metadata: { finalizers: [] } }).catch(() => {});
    for (const host of [H1, H2]) await client.delete(Resources.hosts, host).catch(() => {});
    await client?.close();
  });

  it("makes each host's local pool, owned by the host, and rolls it up from the agent's report", async () => {
    const local = await waitFor("the local pool of h1 rolled up", async () => {
      const p = await pool(localPoolName(H1));
      return p.status?.capacity ? p : undefined;
    });
    expect(local.spec).toMatchObject({ zone: ZONE, type: "local", host: H1 });
    expect(local.metadata.ownerReferences?.[0]).toMatchObject({ kind: "Host", name: H1 });
    expect(local.metadata.finalizers).toContain(STORAGE_POOL_FINALIZER);
    expect(local.status).toMatchObject({ capacity: "20Gi", available: "18Gi", allocated: "0", volumes: 0 });
    expect(local.status?.hosts).toEqual({ total: 1, ready: 1 });
    expect(local.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
  });

  it("moves a disk to a pool of the VM's new host, and drops the target once it arrived", async () => {
    await waitFor("the local pool of h2", () => pool(localPoolName(H2)));
    vm = await client.create<VirtualMachine>(Resources.virtualMachines, {
      ...typeMeta("VirtualMachine"),
      metadata: { name: "web", namespace },
      spec: { zone: ZONE, serviceOffering: "small", template: "tiny" },
    });
    await client.create<Volume>(Resources.volumes, {
      ...typeMeta("Volume"),
      metadata: {
        name: "web-root",
        namespace,
        ownerReferences: [
          {
            apiVersion: "stratus.io/v1alpha1",
            kind: "VirtualMachine",
            name: "web",
            uid: vm.metadata.uid as string,
          },
        ],
      },
      spec: { zone: ZONE, type: "ROOT", size: "5Gi" },
    });
    await agentWrites(
      Resources.volumes,
      { name: "web-root", namespace },
      {
        phase: "Ready",
        pool: localPoolName(H1),
        host: H1,
      },
    );
    // Evacuated from h1 and placed on h2 (as compute would): h2 does not reach h1's local pool.
    await agentWrites(Resources.virtualMachines, { name: "web", namespace }, { host: H2, evacuatedFrom: H1 });
    const moving = await waitFor("the transfer target", async () => {
      const v = await volume();
      return v.status?.transfer?.target ? v : undefined;
    });
    expect(moving.status?.transfer?.target).toEqual({ pool: localPoolName(H2), host: H2 });
    expect(moving.status?.conditions?.find((c) => c.type === "Moved")).toMatchObject({ reason: "Moving" });
    await waitFor("the target pool to count the arriving disk", async () => {
      return (await pool(localPoolName(H2))).status?.allocated === "5Gi";
    });
    // The agents copied it: the disk is in h2's pool now.
    await agentWrites(
      Resources.volumes,
      { name: "web-root", namespace },
      {
        phase: "Ready",
        pool: localPoolName(H2),
        host: H2,
      },
    );
    const arrived = await waitFor("the target dropped", async () => {
      const v = await volume();
      return v.status?.transfer?.target === undefined ? v : undefined;
    });
    expect((arrived.status?.conditions ?? []).some((c) => c.type === "Moved")).toBe(false);
    expect(arrived.status?.pool).toBe(localPoolName(H2));
  });

  it("moves a volume to the pool it asks for; a copy begun is finished before the request changes again", async () => {
    await client.create<Volume>(Resources.volumes, {
      ...typeMeta("Volume"),
      metadata: { name: "spare", namespace },
      spec: { zone: ZONE, size: "1Gi" },
    });
    const spare = () => client.get<Volume>(Resources.volumes, "spare", namespace);
    const onH1 = { phase: "Ready", pool: localPoolName(H1), host: H1, capacity: "1Gi" };
    await agentWrites(Resources.volumes, { name: "spare", namespace }, onH1);
    const ask = (pool: string) =>
      client.mergePatch(Resources.volumes, "spare", namespace, { spec: { pool } });
    /** The volume once storage decided on its latest spec (its Moved condition, or none, says so). */
    const decided = (what: string, test: (v: Volume) => boolean) =>
      waitFor(what, async () => {
        const v = await spare();
        return test(v) ? v : undefined;
      });
    const target = (v: Volume) => v.status?.transfer?.target;

    await ask(localPoolName(H2));
    const asked = await decided("the requested target", (v) => target(v)?.pool === localPoolName(H2));
    expect(target(asked)).toEqual({ pool: localPoolName(H2), host: H2 });
    // Asked back before any copy began: called off.
    await ask(localPoolName(H1));
    await decided("the move called off", (v) => target(v) === undefined);

    // Asked again; h2's agent announces its copy: now the move finishes first, whatever is asked.
    await ask(localPoolName(H2));
    await decided("the target again", (v) => target(v)?.pool === localPoolName(H2));
    await agentWrites(
      Resources.volumes,
      { name: "spare", namespace },
      {
        ...onH1,
        transfer: {
          received: {
            pool: localPoolName(H2),
            host: H2,
            path: "/p/d",
            sha256: "a".repeat(64),
            pending: true,
          },
        },
      },
    );
    const back = await client.mergePatch<Volume>(Resources.volumes, "spare", namespace, {
      spec: { pool: localPoolName(H1) },
    });
    await decided(
      "storage to look at the latest request",
      (v) =>
        v.status?.conditions?.find((c) => c.type === "Moved")?.observedGeneration ===
        back.metadata.generation,
    );
    expect(target(await spare())).toEqual({ pool: localPoolName(H2), host: H2 });
    // Handed over to h2; then it goes where it is asked now.
    await agentWrites(
      Resources.volumes,
      { name: "spare", namespace },
      { ...onH1, pool: localPoolName(H2), host: H2 },
    );
    const returning = await decided("the move back", (v) => target(v)?.pool === localPoolName(H1));
    expect(target(returning)).toEqual({ pool: localPoolName(H1), host: H1 });
    await client.delete(Resources.volumes, "spare", namespace);
    await client.mergePatch(Resources.volumes, "spare", namespace, { metadata: { finalizers: [] } });
  });

  it("holds a pool's deletion while a volume is in it, saying so, and lets it go once empty", async () => {
    await client.create(Resources.storagePools, {
      metadata: { name: NFS },
      spec: { zone: ZONE, type: "nfs", path: "/mnt/nfs", nfs: { server: "nas", exportPath: "/export" } },
    });
    await waitFor("the pool's finalizer", async () =>
      (await pool(NFS)).metadata.finalizers?.includes(STORAGE_POOL_FINALIZER),
    );
    await agentWrites(Resources.volumes, { name: "web-root", namespace }, { pool: NFS, host: H2 });
    await waitFor("the nfs pool to count the volume", async () => (await pool(NFS)).status?.volumes === 1);
    await client.delete(Resources.storagePools, NFS);
    const blocked = await waitFor("DeletionBlocked", async () =>
      (await pool(NFS)).status?.conditions?.find((c) => c.type === "DeletionBlocked"),
    );
    expect(blocked.message).toContain("1 volume(s) are still in the pool");
    await agentWrites(
      Resources.volumes,
      { name: "web-root", namespace },
      { pool: localPoolName(H2), host: H2 },
    );
    await waitUntilGone(client, Resources.storagePools, NFS);
  });
});

// A compromised host agent against the real API server: with the manifests' RBAC and admission
// policy, two agents' own node-bound tokens and the agent's own write code (KubeAgentWrites), agent
// A tries to seize host B's VMs, volumes and snapshots and is refused with the policy's message; and
// every legitimate way an agent comes to hold another host's object still goes through: a new disk,
// a shared disk the storage controller released to it, a disk handed over after a verified copy, a
// VM compute bound to it after a failover or an evacuation.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { KubeAgentWrites, type ObjectRef } from "../../host-agent/agent-writes.ts";
import { START_CLAIM_FIELD_MANAGER } from "../../host-agent/fencing.ts";
import { ApiError, KubeClient, type ResourceType } from "../../runtime/client.ts";
import { kubeConfigFrom } from "../../runtime/config.ts";
import { EventRecorder } from "../../runtime/events.ts";
import { applyManifests, TestIdentities } from "./identities.ts";
import { sharedControlPlane, useNamespace } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const [A, B, C] = [`adm-a-${suffix}`, `adm-b-${suffix}`, `adm-c-${suffix}`];
const SEIZE = "a host agent may change only the VMs and volumes bound to its host";

describe("a compromised host agent, against the admission policy", () => {
  let admin: KubeClient;
  let namespace: string;
  let workDir: string;
  let identities: TestIdentities;
  const clients: KubeClient[] = [];
  /** Each host's agent: its client and its own write code. */
  const agents = new Map<string, { client: KubeClient; writes: KubeAgentWrites }>();
  const agent = (host: string) => agents.get(host) as { client: KubeClient; writes: KubeAgentWrites };

  /** What the control plane writes (compute, storage, fabric), as the administrator. */
  const controlPlaneWrites = (type: ResourceType, name: string, status: Record<string, unknown>) =>
    admin.mergePatch(type, name, namespace, { status }, "status");
  const refusal = (write: Promise<unknown>) =>
    write.then(
      () => {
        throw new Error("the write went through");
      },
      (error: unknown) => error as ApiError,
    );
  const expectRefused = async (write: Promise<unknown>, message = SEIZE) => {
    const error = await refusal(write);
    expect(error).toBeInstanceOf(ApiError);
    expect({ status: error.status, message: error.message }).toEqual({
      status: 403,
      message: expect.stringContaining(message),
    });
  };
  const ref = (name: string): ObjectRef => ({ namespace, name });
  /** A status merge patch as the host's agent, outside its own write code (a forged write). */
  const forged = (host: string, type: ResourceType, name: string, status: Record<string, unknown>) =>
    agent(host).client.mergePatch(type, name, namespace, { status }, "status");
  const volume = (name: string) => admin.get<Volume>(Resources.volumes, name, namespace);
  const vm = (name: string) => admin.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
  const disk = (host: string, pool: string, name: string) => ({
    phase: "Ready",
    host,
    pool,
    poolType: pool.startsWith("local-") ? "local" : "sharedMountPoint",
    path: `/pools/${pool}/${name}`,
    capacity: "1Gi",
  });

  async function createVm(name: string, host: string): Promise<VirtualMachine> {
    await admin.create(Resources.virtualMachines, {
      metadata: { name, namespace },
      spec: { zone: "z", serviceOffering: "small", template: "tiny" },
    });
    await controlPlaneWrites(Resources.virtualMachines, name, { host });
    return vm(name);
  }

  async function createVolume(name: string, status?: Record<string, unknown>): Promise<Volume> {
    await admin.create(Resources.volumes, {
      metadata: { name, namespace },
      spec: { zone: "z", size: "1Gi" },
    });
    if (status) await controlPlaneWrites(Resources.volumes, name, status);
    return volume(name);
  }

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    admin = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "adm");
    workDir = await mkdtemp(join(tmpdir(), "stratus-adm-"));
    identities = new TestIdentities(admin, workDir);
    await applyManifests();
    for (const host of [A, B, C]) {
      const client = new KubeClient(kubeConfigFrom(await identities.hostAgent(host)));
      clients.push(client);
      agents.set(host, {
        client,
        writes: new KubeAgentWrites(client, new EventRecorder(client, "stratus.io/host-agent", host)),
      });
    }
  });

  afterAll(async () => {
    // No controller runs here to remove the finalizers: the namespace goes only without them.
    for (const type of [Resources.virtualMachines, Resources.volumes, Resources.volumeSnapshots])
      for (const object of (await admin.list(type, { namespace })).items)
        await admin.mergePatch(type, object.metadata.name as string, namespace, {
          metadata: { finalizers: null },
        });
    for (const client of clients) await client.close();
    await identities?.cleanup();
    await admin?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("cannot take another host's VM, nor write its status, nor claim its start after a failover", async () => {
    const web = await createVm("web", B);
    await expectRefused(forged(A, Resources.virtualMachines, "web", { host: A }));
    await expectRefused(agent(A).writes.vmStatus(web, { state: "Stopped" }));
    // Released by the fabric from a lost host B: still not A's until compute binds it to A.
    await controlPlaneWrites(Resources.virtualMachines, "web", {
      failover: { from: B, lostAt: new Date().toISOString(), releasedAt: new Date().toISOString() },
    });
    const claim = (host: string, on: VirtualMachine) =>
      agent(host).client.apply(
        Resources.virtualMachines,
        {
          metadata: { name: "web", namespace, resourceVersion: on.metadata.resourceVersion as string },
          status: { startClaim: { host, at: new Date().toISOString() } },
        },
        { fieldManager: START_CLAIM_FIELD_MANAGER, subresource: "status" },
      );
    await expectRefused(claim(A, await vm("web")));
    await controlPlaneWrites(Resources.virtualMachines, "web", { host: A });
    await claim(A, await vm("web"));
    await agent(A).writes.vmStatus(await vm("web"), { state: "Running" });
    // Now host B, back from the dead, is the one refused.
    await expectRefused(agent(B).writes.vmStatus(await vm("web"), { state: "Stopped" }));
    expect((await vm("web")).status).toMatchObject({ host: A, state: "Running", startClaim: { host: A } });
  });

  it("cannot take another host's volume, local or shared, nor its snapshot", async () => {
    const local = await createVolume("local-data", disk(B, `local-${B}`, "local-data"));
    const shared = await createVolume("shared-data", disk(B, "nfs-1", "shared-data"));
    for (const held of [local, shared])
      await expectRefused(
        agent(A).writes.volumeStatus(ref(held.metadata.name as string), held, disk(A, "nfs-1", "x")),
      );
    // Nor release one to itself: releasedTo is the storage controller's.
    await expectRefused(forged(A, Resources.volumes, "shared-data", { releasedTo: A }));
    await expectRefused(
      forged(B, Resources.volumes, "shared-data", { releasedTo: A }),
      "a host agent may not release a volume",
    );
    await admin.create(Resources.volumeSnapshots, {
      metadata: { name: "snap", namespace },
      spec: { volume: "local-data" },
    });
    await controlPlaneWrites(Resources.volumeSnapshots, "snap", { host: B });
    await expectRefused(
      agent(A).writes.snapshotStatus(ref("snap"), { phase: "Ready" }),
      "(and their snapshots)",
    );
    // Nor grant itself room past the account's primary-storage limit, on a volume it holds.
    await expectRefused(
      forged(B, Resources.volumes, "shared-data", { admittedSize: "1Ti" }),
      "a host agent may not grant a volume storage",
    );
    await expectRefused(
      forged(B, Resources.volumes, "shared-data", {
        conditions: [
          {
            type: "Admitted",
            status: "True",
            reason: "Admitted",
            message: "forged",
            lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
          },
        ],
      }),
      "a host agent may not grant a volume storage",
    );
    expect((await volume("shared-data")).status).toMatchObject({ host: B, pool: "nfs-1" });
  });

  it("changes only the finalizers of its own VMs and volumes, never their spec", async () => {
    await createVm("mine", A);
    const patch = (body: Record<string, unknown>) =>
      agent(A).client.mergePatch(Resources.virtualMachines, "mine", namespace, body);
    await expectRefused(
      patch({ spec: { runStrategy: "Halted" } }),
      "never their spec, labels or annotations",
    );
    await expectRefused(patch({ metadata: { annotations: { "stratus.io/x": "y" } } }), "never their spec");
    await patch({ metadata: { finalizers: null } });
    expect((await vm("mine")).metadata.finalizers).toBeUndefined();
  });

  it("takes a new disk, and a shared disk only once the storage controller released it to its host", async () => {
    await createVolume("fresh");
    await agent(A).writes.volumeStatus(ref("fresh"), undefined, disk(A, `local-${A}`, "fresh"));
    // The VM using a shared disk of B went to C: C may take it only once storage released it there.
    const moved = await createVolume("moved", disk(B, "nfs-1", "moved"));
    await expectRefused(agent(C).writes.volumeStatus(ref("moved"), moved, disk(C, "nfs-1", "moved")));
    await controlPlaneWrites(Resources.volumes, "moved", { releasedTo: C });
    // Released to C, to nobody else.
    await expectRefused(agent(A).writes.volumeStatus(ref("moved"), moved, disk(A, "nfs-1", "moved")));
    await agent(C).writes.volumeStatus(ref("moved"), moved, disk(C, "nfs-1", "moved"));
    await expectRefused(
      agent(B).writes.volumeStatus(ref("moved"), await volume("moved"), { phase: "Attached" }),
    );
    expect((await volume("fresh")).status?.host).toBe(A);
    expect((await volume("moved")).status).toMatchObject({ host: C, releasedTo: C });
  });

  it("moves a disk between two hosts' local pools step by step, and hands it only to the host that copied it", async () => {
    const moving = await createVolume("moving", disk(B, `local-${B}`, "moving"));
    await controlPlaneWrites(Resources.volumes, "moving", {
      transfer: { target: { pool: `local-${A}`, host: A } },
    });
    const exported = { path: "/secondary/transfers/moving.qcow2", sha256: "a".repeat(64), bytes: 1 };
    await agent(B).writes.volumeTransfer(ref("moving"), { exported });
    const received = {
      pool: `local-${A}`,
      host: A,
      path: `/pools/local-${A}/moving`,
      sha256: "a".repeat(64),
    };
    // The target announces its copy on the version naming it, and writes only its own step.
    await agent(A).writes.volumeTransfer(
      ref("moving"),
      { exported, received: { ...received, pending: true } },
      (await volume("moving")).metadata.resourceVersion,
    );
    await expectRefused(agent(A).writes.volumeStatus(ref("moving"), moving, disk(A, `local-${A}`, "moving")));
    await expectRefused(
      agent(A).writes.volumeTransfer(ref("moving"), {
        exported: { ...exported, sha256: "b".repeat(64) },
        received,
      }),
    );
    await expectRefused(
      agent(C).writes.volumeTransfer(ref("moving"), { exported, received: { ...received, host: C } }),
    );
    await agent(A).writes.volumeTransfer(ref("moving"), { exported, received });
    // The holder hands over to the host that proved the copy, and to no other.
    await expectRefused(agent(B).writes.volumeStatus(ref("moving"), moving, disk(C, `local-${A}`, "moving")));
    await agent(B).writes.volumeStatus(ref("moving"), moving, disk(A, `local-${A}`, "moving"));
    await expectRefused(agent(B).writes.volumeTransfer(ref("moving"), {}));
    await agent(A).writes.volumeTransfer(ref("moving"), {});
    const done = await volume("moving");
    expect(done.status).toMatchObject({ host: A, pool: `local-${A}`, transfer: { target: { host: A } } });
    expect(done.status?.transfer).not.toHaveProperty("received");
  });

  it("lets go of a VM for maintenance, and the next host writes it once compute bound it there", async () => {
    const leaving = await createVm("leaving", B);
    await agent(B).writes.vmStatus(leaving, { state: "Stopped", evacuatedFrom: B });
    await expectRefused(agent(C).writes.vmStatus(await vm("leaving"), { state: "Running" }));
    await controlPlaneWrites(Resources.virtualMachines, "leaving", { host: C });
    await agent(C).writes.vmStatus(await vm("leaving"), { state: "Running" });
    expect((await vm("leaving")).status).toMatchObject({ host: C, state: "Running" });
  });
});

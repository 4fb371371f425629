// The runtime's write helpers against the real API server: server-side apply per field manager,
// status written only when it changed, finalizers guarded by resourceVersion, owner references
// that garbage collection follows, and Events.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type IPAddress, type Network, Resources, type VirtualMachine } from "../../crds/index.ts";
import { type ApiError, KubeClient, type KubeObject } from "../../runtime/client.ts";
import { EVENT, EventRecorder } from "../../runtime/events.ts";
import { addFinalizer, applyStatus, ownerReference, removeFinalizer } from "../../runtime/objects.ts";
import { sharedControlPlane, useNamespace, waitUntilGone } from "./support.ts";

describe("runtime writes", () => {
  let client: KubeClient;
  let namespace: string;

  const vm = (name: string) => ({
    metadata: { name, namespace },
    spec: { zone: "z1", serviceOffering: "tiny", template: "tiny-linux" },
  });
  const network = (name: string) =>
    ({ metadata: { name, namespace }, spec: { zone: "z1", cidr: "10.0.0.0/24" } }) as Network;

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "writes");
  });
  afterAll(async () => {
    await client?.close();
  });

  it("server-side apply records one field manager per writer and changes nothing when repeated", async () => {
    const applied = await client.apply<VirtualMachine>(Resources.virtualMachines, vm("ssa"), {
      fieldManager: "user-gitops",
    });
    const again = await client.apply<VirtualMachine>(Resources.virtualMachines, vm("ssa"), {
      fieldManager: "user-gitops",
    });
    expect(again.metadata.resourceVersion).toBe(applied.metadata.resourceVersion);
    await client.apply(
      Resources.virtualMachines,
      { metadata: { name: "ssa", namespace }, status: { state: "Pending" } },
      {
        fieldManager: "stratus-operator/compute",
        subresource: "status",
      },
    );
    const read = await client.get<
      VirtualMachine & { metadata: { managedFields: { manager: string; subresource?: string }[] } }
    >(Resources.virtualMachines, "ssa", namespace);
    expect(read.metadata.managedFields.map((f) => [f.manager, f.subresource ?? ""])).toEqual(
      expect.arrayContaining([
        ["user-gitops", ""],
        ["stratus-operator/compute", "status"],
      ]),
    );
  });

  it("writes status only when it changed", async () => {
    await client.create(Resources.virtualMachines, vm("status"));
    const fresh = await client.get<VirtualMachine>(Resources.virtualMachines, "status", namespace);
    expect(
      await applyStatus(client, Resources.virtualMachines, fresh, { state: "Stopped", host: "h1" }, "test"),
    ).toBe(true);
    const written = await client.get<VirtualMachine>(Resources.virtualMachines, "status", namespace);
    expect(written.status).toMatchObject({ state: "Stopped", host: "h1" });
    expect(await applyStatus(client, Resources.virtualMachines, written, { state: "Stopped" }, "test")).toBe(
      false,
    );
    const unchanged = await client.get<VirtualMachine>(Resources.virtualMachines, "status", namespace);
    expect(unchanged.metadata.resourceVersion).toBe(written.metadata.resourceVersion);
  });

  it("adds and removes finalizers, refusing a stale object", async () => {
    // A Network: VMs and Volumes get their finalizers from the admission policy at create.
    const created = await client.create<Network>(Resources.networks, network("finalized"));
    expect(await addFinalizer(client, Resources.networks, created, "stratus.io/test")).toBe(true);
    // `created` is now stale: a decision based on it must not be written.
    const stale = { ...created, metadata: { ...created.metadata, finalizers: [] } };
    const conflict = await addFinalizer(client, Resources.networks, stale, "stratus.io/other").catch(
      (e: unknown) => e,
    );
    expect((conflict as ApiError).status).toBe(409);
    const current = await client.get<Network>(Resources.networks, "finalized", namespace);
    expect(current.metadata.finalizers).toEqual(["stratus.io/test"]);
    expect(await addFinalizer(client, Resources.networks, current, "stratus.io/test")).toBe(false);

    await client.delete(Resources.networks, "finalized", namespace);
    const terminating = await client.get<Network>(Resources.networks, "finalized", namespace);
    expect(terminating.metadata.deletionTimestamp).toBeDefined();
    expect(await removeFinalizer(client, Resources.networks, terminating, "stratus.io/test")).toBe(true);
    await waitUntilGone(client, Resources.networks, "finalized", namespace);
  });

  it("owner references let garbage collection remove children", async () => {
    const owner = await client.create<Network>(Resources.networks, network("owner"));
    await client.create<IPAddress>(Resources.ipAddresses, {
      metadata: {
        name: "owner-10-0-0-2",
        namespace,
        ownerReferences: [ownerReference(Resources.networks, owner)],
      },
      spec: { network: "owner", address: "10.0.0.2" },
    } as IPAddress);
    await client.delete(Resources.networks, "owner", namespace);
    await waitUntilGone(client, Resources.ipAddresses, "owner-10-0-0-2", namespace);
  });

  it("records Events about an object, once per repeat window", async () => {
    const object = await client.create<VirtualMachine>(
      Resources.virtualMachines,
      vm("evented") as VirtualMachine,
    );
    const recorder = new EventRecorder(client, "stratus.io/test", "test-instance");
    const event = {
      type: "Warning" as const,
      reason: "TemplateUnavailable",
      action: "Schedule",
      note: "template tiny-linux is not ready",
    };
    await recorder.record(Resources.virtualMachines, object, event);
    await recorder.record(Resources.virtualMachines, object, event);
    const events = await client.list<
      KubeObject & { regarding: { name: string; uid: string }; reason: string; note: string }
    >(EVENT, {
      namespace,
    });
    const mine = events.items.filter((e) => e.regarding.name === "evented");
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({
      reason: "TemplateUnavailable",
      note: "template tiny-linux is not ready",
      regarding: { uid: object.metadata.uid },
    });
  });
});

// The aggregated API subresources.stratus.io through the real kube-apiserver aggregator:
// discovery with kubectl, start/stop/restart of a VM on a simulated host, and RBAC on each
// subresource (SubjectAccessReview on the full subresource, as the front proxy's user).
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SUBRESOURCE_GROUP } from "../../apiserver/subresources.ts";
import { RESTART_ANNOTATION, Resources, type VirtualMachine } from "../../crds/index.ts";
import { ApiError, KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import { type StratusProcess, startApiServer, startHostAgent, startOperator } from "./processes.ts";
import { kubectl, serveTinyImage, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `sub-zone-${suffix}`;
const ROLE: ResourceType = {
  group: "rbac.authorization.k8s.io",
  version: "v1",
  plural: "roles",
  kind: "Role",
  namespaced: true,
};
const BINDING: ResourceType = { ...ROLE, plural: "rolebindings", kind: "RoleBinding" };

describe("the aggregated API subresources.stratus.io", () => {
  let admin: KubeClient;
  let namespace: string;
  let kubeconfigPath: string;
  let workDir: string;
  const processes: StratusProcess[] = [];
  const path = (name: string, action: string) =>
    `/apis/${SUBRESOURCE_GROUP}/v1alpha1/namespaces/${namespace}/virtualmachines/${name}/${action}`;
  const put = (client: KubeClient, name: string, action: string) =>
    client.request("PUT", path(name, action), {
      verb: "update",
      resource: `virtualmachines/${action}`,
      body: {},
    });
  const getVm = (name: string) => admin.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
  const state = (name: string, wanted: string) =>
    waitFor(`${name} ${wanted}`, async () => (await getVm(name)).status?.state === wanted);

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    kubeconfigPath = controlPlane.kubeconfigPath;
    admin = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "sub");
    workDir = await mkdtemp(join(tmpdir(), "stratus-sub-"));
    const { url, checksum } = await serveTinyImage();
    await admin.create(Resources.zones, { metadata: { name: ZONE }, spec: {} });
    await admin.create(Resources.serviceOfferings, {
      metadata: { name: `sub-small-${suffix}` },
      spec: { cpu: 1, memory: "64Mi" },
    });
    await admin.create(Resources.templates, {
      metadata: { name: `sub-tiny-${suffix}` },
      spec: { source: { url }, checksum },
    });
    processes.push(
      await startOperator({
        kubeconfigPath,
        identity: `sub-op-${suffix}`,
        args: [`--lease-namespace=${namespace}`],
      }),
      await startHostAgent({
        kubeconfigPath,
        hostName: `sub-h1-${suffix}`,
        zone: ZONE,
        leaseNamespace: namespace,
        workDir,
      }),
    );
    const api = await startApiServer({
      kubeconfigPath,
      client: admin,
      identity: `sub-api-${suffix}`,
      keysNamespace: namespace,
      subresources: { namespace, workDir },
    });
    processes.push(api.process);
    await admin.create(Resources.virtualMachines, {
      metadata: { name: "vm1", namespace },
      spec: { zone: ZONE, serviceOffering: `sub-small-${suffix}`, template: `sub-tiny-${suffix}` },
    });
    await state("vm1", "Running");
  });

  afterAll(async () => {
    for (const p of processes) await p.stop("SIGKILL");
    await admin?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("is discoverable through the aggregator with kubectl", async () => {
    const result = await kubectl(kubeconfigPath, ["get", "--raw", `/apis/${SUBRESOURCE_GROUP}/v1alpha1`]);
    expect(result.code, result.stderr).toBe(0);
    const list = JSON.parse(result.stdout) as { resources: { name: string; verbs: string[] }[] };
    expect(list.resources.map((r) => r.name).sort()).toEqual([
      "virtualmachines/console",
      "virtualmachines/restart",
      "virtualmachines/start",
      "virtualmachines/stop",
      "virtualmachines/userdata",
    ]);
  });

  it("stops, starts and restarts a VM", async () => {
    await put(admin, "vm1", "stop");
    await state("vm1", "Stopped");
    expect((await getVm("vm1")).spec.runStrategy).toBe("Halted");
    await put(admin, "vm1", "start");
    await state("vm1", "Running");
    const before = (await getVm("vm1")).metadata.annotations?.[RESTART_ANNOTATION];
    await put(admin, "vm1", "restart");
    const requested = (await getVm("vm1")).metadata.annotations?.[RESTART_ANNOTATION];
    expect(requested).toBeDefined();
    expect(requested).not.toBe(before);
    await waitFor("the agent to restart it", async () => {
      const vm = await getVm("vm1");
      return vm.status?.restartedAt === requested && vm.status?.state === "Running";
    });
    await expect(put(admin, "nope", "start")).rejects.toMatchObject({ status: 404 });
  });

  it("authorizes each subresource with RBAC, as the user the front proxy vouches for", async () => {
    const controlPlane = await sharedControlPlane();
    const eve = await controlPlane.issueIdentity(`eve-${suffix}`);
    const asEve = new KubeClient(eve.kubeConfig);
    const denied = await put(asEve, "vm1", "stop").catch((error: unknown) => error);
    expect(denied).toBeInstanceOf(ApiError);
    expect((denied as ApiError).status).toBe(403);
    // kube-apiserver authorizes the subresource before it proxies; the server checks again (SAR).
    expect((denied as ApiError).message).toContain(
      `cannot update resource "virtualmachines/stop" in API group "${SUBRESOURCE_GROUP}"`,
    );
    // Allowed to stop, not to start.
    await admin.apply(
      ROLE,
      {
        metadata: { name: "vm-stopper", namespace },
        rules: [{ apiGroups: [SUBRESOURCE_GROUP], resources: ["virtualmachines/stop"], verbs: ["update"] }],
      } as KubeObject & Record<string, unknown>,
      { fieldManager: "test" },
    );
    await admin.apply(
      BINDING,
      {
        metadata: { name: "vm-stopper", namespace },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "vm-stopper" },
        subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: eve.user }],
      } as KubeObject & Record<string, unknown>,
      { fieldManager: "test" },
    );
    await waitFor("eve may stop", async () =>
      put(asEve, "vm1", "stop").then(
        () => true,
        () => false,
      ),
    );
    await state("vm1", "Stopped");
    await expect(put(asEve, "vm1", "start")).rejects.toMatchObject({ status: 403 });
    await asEve.close();
  });
});

// Tenants against the real API server and the real API component, each attack tried for real:
// with the manifests' RBAC and admission policies, two accounts (alice in A, bob in B), an
// administrator (carol), the API component running as its own ServiceAccount and two host agents'
// node-bound tokens. A tenant makes no AsyncJob and no job reaches into another account; a tenant
// pins no VM to a host, nor a network over the cluster's Service range; the API component acts as
// no identity but the accounts' (never system:masters); another account's ids answer as made-up
// ones; and user data reaches only the agent of the VM's host.
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_KEY_LABEL, SECRET, type Secret } from "../../apiserver/api.ts";
import { SUBRESOURCE_GROUP } from "../../apiserver/subresources.ts";
import {
  type AsyncJob,
  Resources,
  type VirtualMachine,
  type VirtualMachineMigration,
} from "../../crds/index.ts";
import { ApiError, KubeClient, type KubeObject } from "../../runtime/client.ts";
import { kubeConfigFrom } from "../../runtime/config.ts";
import { type Account, RBAC, signedRequest } from "./cloudstack-accounts.ts";
import { applyManifests, TestIdentities } from "./identities.ts";
import { logsOnFailure, type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const KEYS = "stratus-api-keys";
const [NODE_A, NODE_B] = [`ten-a-${suffix}`, `ten-b-${suffix}`];
const [ALICE, BOB, CAROL, MALLORY] = ["alice", "bob", "carol", "mallory"].map((n) => `${n}-${suffix}`) as [
  string,
  string,
  string,
  string,
];
/** What the API server answered a create with. */
const uidOf = (created: { metadata: object }) => (created.metadata as KubeObject["metadata"]).uid as string;
const USER_DATA = Buffer.from("#cloud-config\npassword: s3cret\n").toString("base64");

describe("tenants that reach neither each other, nor the hosts, nor the administrators' rights", () => {
  let admin: KubeClient;
  let workDir: string;
  let identities: TestIdentities;
  let api: StratusProcess | undefined;
  let endpoint: string;
  let apiIdentity: KubeClient;
  const accounts = new Map<string, Account>();
  const namespaces = { a: "", b: "" };
  const agents = new Map<string, KubeClient>();
  const ids: Record<string, string> = {};
  const apply = (type: Parameters<KubeClient["apply"]>[0], object: Record<string, unknown>) =>
    admin.apply(type, object as KubeObject & Record<string, unknown>, { fieldManager: "tenancy-test" });
  const call = (who: string, params: Record<string, string>) =>
    signedRequest(endpoint, accounts.get(who) as Account, params);
  const bodyOf = (result: Awaited<ReturnType<typeof call>>) => Object.values(result.body)[0] ?? {};
  const refused = async (write: Promise<unknown>) => {
    const error = (await write.then(
      () => new Error("it went through"),
      (e: unknown) => e,
    )) as ApiError;
    expect(error).toBeInstanceOf(ApiError);
    return { status: error.status, message: error.message };
  };
  const bind = (name: string, namespace: string | undefined, role: string, subject: Record<string, string>) =>
    apply(RBAC("v1", namespace ? "rolebindings" : "clusterrolebindings"), {
      metadata: { name, ...(namespace ? { namespace } : {}) },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: role },
      subjects: [subject],
    });
  const user = (name: string) => ({ apiGroup: "rbac.authorization.k8s.io", kind: "User", name });
  const userData = (client: KubeClient, namespace: string, vm: string) =>
    client.request<{ userData?: string }>(
      "GET",
      `/apis/${SUBRESOURCE_GROUP}/v1alpha1/namespaces/${namespace}/virtualmachines/${vm}/userdata`,
      { verb: "get", resource: "virtualmachines/userdata" },
    );

  /** An account: its namespace's user role, the catalog, an API key, and the API component's rights in it. */
  async function account(name: string, namespace: string, groups: string[] = []): Promise<Account> {
    if (namespace) {
      await bind(`stratus-cloud-user-${name}`, namespace, "stratus-cloud-user", user(name));
      await bind("stratus-apiserver", namespace, "stratus-apiserver-account", {
        kind: "ServiceAccount",
        name: "stratus-apiserver",
        namespace: "stratus-system",
      });
    }
    await bind(`stratus-catalog-reader-${name}`, undefined, "stratus-catalog-reader", user(name));
    const key = { apiKey: randomBytes(12).toString("hex"), secretKey: randomBytes(24).toString("base64") };
    await admin.create(SECRET, {
      metadata: { name: `key-${name}`, namespace: KEYS, labels: { [API_KEY_LABEL]: "true" } },
      stringData: { ...key, user: name, groups: groups.join(","), account: namespace || "default" },
    } as KubeObject);
    const made = { user: name, namespace, ...key };
    accounts.set(name, made);
    return made;
  }

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    admin = new KubeClient(controlPlane.kubeConfig);
    workDir = await mkdtemp(join(tmpdir(), "stratus-ten-"));
    identities = new TestIdentities(admin, workDir);
    await applyManifests();
    namespaces.a = await useNamespace(controlPlane.kubeConfig, "ten-a");
    namespaces.b = await useNamespace(controlPlane.kubeConfig, "ten-b");
    // Whom the API component may act as: the accounts' users (aggregated into its role).
    await apply(RBAC("v1", "clusterroles"), {
      metadata: { name: `tenants-${suffix}`, labels: { "stratus.io/tenant-identities": "true" } },
      rules: [
        { apiGroups: [""], resources: ["users"], verbs: ["impersonate"], resourceNames: [ALICE, BOB, CAROL] },
      ],
    });
    await account(ALICE, namespaces.a);
    await account(BOB, namespaces.b);
    await account(CAROL, "");
    for (const role of ["stratus-cloud-admin", "stratus-cloud-user"])
      await bind(`${role}-${CAROL}`, undefined, role, user(CAROL));
    // A key an administrator got wrong: the API component must never act as system:masters.
    await account(MALLORY, namespaces.a, ["system:masters"]);
    const apiKubeconfig = await identities.serviceAccount("stratus-apiserver");
    apiIdentity = new KubeClient(kubeConfigFrom(apiKubeconfig));
    const started = await startApiServer({
      kubeconfigPath: apiKubeconfig,
      client: admin,
      identity: `ten-api-${suffix}`,
      keysNamespace: KEYS,
      subresources: { namespace: namespaces.a, workDir },
    });
    api = started.process;
    endpoint = started.endpoint;
    for (const node of [NODE_A, NODE_B])
      agents.set(node, new KubeClient(kubeConfigFrom(await identities.hostAgent(node))));
    const zone = await admin.create(Resources.zones, { metadata: { name: `ten-${suffix}` }, spec: {} });
    const offering = await admin.create(Resources.serviceOfferings, {
      metadata: { name: `ten-small-${suffix}` },
      spec: { cpu: 1, memory: "64Mi" },
    });
    const template = await admin.create(Resources.templates, {
      metadata: { name: `ten-tiny-${suffix}` },
      spec: { source: { url: "http://127.0.0.1:9/none.qcow2" } },
    });
    Object.assign(ids, { zone: uidOf(zone), offering: uidOf(offering), template: uidOf(template) });
  });

  logsOnFailure(() => [api]);

  afterAll(async () => {
    await api?.stop("SIGKILL");
    for (const name of accounts.keys())
      await admin.delete(SECRET, `key-${name}`, KEYS).catch(() => undefined);
    for (const client of agents.values()) await client.close();
    await apiIdentity?.close();
    await identities?.cleanup();
    await admin?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("lets the API component act only as the accounts' identities, never system:masters", async () => {
    const whoami = (client: KubeClient) =>
      client.request<{ status: { userInfo: { username: string; groups?: string[] } } }>(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {
          verb: "create",
          resource: "selfsubjectreviews",
          body: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" },
        },
      );
    // The controller manager aggregates the accounts' identities into the API component's role.
    await waitFor("alice's identity aggregated", () =>
      whoami(apiIdentity.impersonating(ALICE)).then(
        () => true,
        () => false,
      ),
    );
    const ci = `system:serviceaccount:${namespaces.a}:ci`;
    expect((await whoami(apiIdentity.impersonating(ci))).status.userInfo.username).toBe(ci);
    for (const [who, groups] of [
      [ALICE, ["system:masters"]],
      [MALLORY, []],
      ["admin", []],
      ["system:serviceaccount:kube-system:clusterrole-aggregation-controller", []],
      ["system:kube-controller-manager", []],
    ] as const) {
      const refusal = await refused(whoami(apiIdentity.impersonating(who, groups)));
      expect(refusal, who).toMatchObject({
        status: 403,
        message: expect.stringContaining("cannot impersonate"),
      });
    }
    // Nor can an administrator's slip widen that: no system: name, no unnamed (all) users.
    const slip = (rules: Record<string, unknown>[]) =>
      refused(
        apply(RBAC("v1", "clusterroles"), {
          metadata: { name: `slip-${suffix}`, labels: { "stratus.io/tenant-identities": "true" } },
          rules,
        }),
      );
    for (const rule of [
      { apiGroups: [""], resources: ["groups"], verbs: ["impersonate"], resourceNames: ["system:masters"] },
      { apiGroups: [""], resources: ["users"], verbs: ["impersonate"] },
      { apiGroups: [""], resources: ["secrets"], verbs: ["get"], resourceNames: ["x"] },
    ])
      expect(await slip([rule])).toMatchObject({
        status: 403,
        message: expect.stringContaining("never a system:"),
      });
    expect(
      await refused(bind("stratus-apiserver", "kube-system", "stratus-apiserver-account", user("x"))),
    ).toMatchObject({ status: 403, message: expect.stringContaining("never in a system namespace") });
    // Through the CloudStack API: the key naming system:masters gets nothing, not even from caches.
    const masters = await call(MALLORY, { command: "listVirtualMachines", listall: "true" });
    expect(masters.status).toBe(401);
    expect((await call(ALICE, { command: "listVirtualMachines" })).status).toBe(200);
  });

  it("keeps a tenant's network off the cluster's Service range, reading it with the API component's own rights", async () => {
    const result = await call(ALICE, {
      command: "createNetwork",
      name: "shadow",
      networkofferingid: "x",
      zoneid: ids.zone as string,
      gateway: "10.0.0.1",
      netmask: "255.255.255.0",
    });
    expect(result.status).toBe(431);
    expect(bodyOf(result).errortext).toBe(
      "cidr 10.0.0.0/24 overlaps the cluster's Service range 10.0.0.0/24, which guest networks may not shadow",
    );
  });

  it("refuses a tenant an AsyncJob of its own making", async () => {
    const forged = {
      metadata: { name: "forged", namespace: namespaces.a },
      spec: { command: "startVirtualMachine", user: CAROL, account: namespaces.b },
    };
    expect(await refused(admin.impersonating(ALICE).create(Resources.asyncJobs, forged))).toMatchObject({
      status: 403,
      message: expect.stringContaining('cannot create resource "asyncjobs"'),
    });
  });

  it("resolves a job's target inside the job's own namespace only", async () => {
    await admin.create(Resources.virtualMachines, {
      metadata: { name: "bobs", namespace: namespaces.b },
      spec: { zone: `ten-${suffix}`, serviceOffering: `ten-small-${suffix}`, template: `ten-tiny-${suffix}` },
    });
    const bobs = await admin.mergePatch<VirtualMachine>(
      Resources.virtualMachines,
      "bobs",
      namespaces.b,
      { status: { host: NODE_B, state: "Running" } },
      "status",
    );
    // A job in A naming B's VM by its UID (as a tenant-made job could): it must not see B's VM.
    await admin.create(Resources.asyncJobs, {
      metadata: { name: "cross", namespace: namespaces.a },
      spec: {
        command: "startVirtualMachine",
        user: ALICE,
        account: namespaces.a,
        target: { kind: "VirtualMachine", name: "bobs", uid: bobs.metadata.uid as string },
      },
    });
    const job = await waitFor("the job finished", async () => {
      const current = await admin.get<AsyncJob>(Resources.asyncJobs, "cross", namespaces.a);
      return current.status?.finishedAt ? current : undefined;
    });
    expect(job.status).toMatchObject({ state: "Failed", error: { text: "the virtual machine was deleted" } });
    expect(JSON.stringify(job.status)).not.toContain(NODE_B);
  });

  it("refuses a tenant a VM pinned to a host, and lets an administrator pin one", async () => {
    const vm = (name: string, host?: string) => ({
      metadata: { name, namespace: namespaces.a },
      spec: {
        zone: `ten-${suffix}`,
        serviceOffering: `ten-small-${suffix}`,
        template: `ten-tiny-${suffix}`,
        runStrategy: "Halted",
        ...(host ? { placement: { host } } : {}),
      },
    });
    const pinned = { status: 403, message: expect.stringContaining("only an administrator may pin a VM") };
    const alice = admin.impersonating(ALICE);
    expect(await refused(alice.create(Resources.virtualMachines, vm("pinned", NODE_A)))).toMatchObject(
      pinned,
    );
    // Not even with every right in its own namespace: pinning is granted cluster-wide only.
    await apply(RBAC("v1", "roles"), {
      metadata: { name: "everything", namespace: namespaces.a },
      rules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }],
    });
    await apply(RBAC("v1", "rolebindings"), {
      metadata: { name: "everything", namespace: namespaces.a },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "everything" },
      subjects: [user(ALICE)],
    });
    expect(await refused(alice.create(Resources.virtualMachines, vm("pinned", NODE_A)))).toMatchObject(
      pinned,
    );
    await alice.create(Resources.virtualMachines, vm("free"));
    const pin = { spec: { placement: { host: NODE_A } } };
    expect(
      await refused(alice.mergePatch(Resources.virtualMachines, "free", namespaces.a, pin)),
    ).toMatchObject(pinned);
    // An administrator pins it; its owner still changes the rest, but not the pin.
    await admin.impersonating(CAROL).mergePatch(Resources.virtualMachines, "free", namespaces.a, pin);
    await alice.mergePatch(Resources.virtualMachines, "free", namespaces.a, {
      spec: { runStrategy: "Always" },
    });
    const unpin = { spec: { placement: { host: null } } };
    expect(
      await refused(alice.mergePatch(Resources.virtualMachines, "free", namespaces.a, unpin)),
    ).toMatchObject(pinned);
    expect(
      (await admin.get<VirtualMachine>(Resources.virtualMachines, "free", namespaces.a)).spec,
    ).toMatchObject({
      runStrategy: "Always",
      placement: { host: NODE_A },
    });
  });

  it("answers another account's ids exactly as made-up ones, naming nothing", async () => {
    const network = await admin.create(Resources.networks, {
      metadata: { name: "private", namespace: namespaces.a },
      spec: { zone: `ten-${suffix}`, cidr: "10.77.0.0/24" },
    });
    const vm = await admin.create(Resources.virtualMachines, {
      metadata: { name: "secret-project", namespace: namespaces.a },
      spec: { zone: `ten-${suffix}`, serviceOffering: `ten-small-${suffix}`, template: `ten-tiny-${suffix}` },
    });
    await waitFor("the API component sees alice's VM", async () => {
      const listed = await call(ALICE, { command: "listVirtualMachines", name: "secret-project" });
      return (bodyOf(listed).count as number) === 1;
    });
    const foreign = { vm: uidOf(vm), network: uidOf(network) };
    const madeUp = randomUUID();
    const requests = (id: string, networkId: string) => [
      { command: "recoverVirtualMachine", id },
      { command: "stopVirtualMachine", id },
      { command: "updateVirtualMachine", id, displayname: "x" },
      {
        command: "createTags",
        resourceids: id,
        resourcetype: "UserVm",
        "tags[0].key": "k",
        "tags[0].value": "v",
      },
      { command: "associateIpAddress", networkid: networkId },
    ];
    // Each answer with the id in it made the same: another account's id must read as a made-up one.
    const answers = async (id: string, networkId: string) =>
      Promise.all(
        requests(id, networkId).map(async (params) => {
          const result = await call(BOB, params);
          const text = String(bodyOf(result).errortext).replaceAll(id, "ID").replaceAll(networkId, "ID");
          return { command: params.command, status: result.status, text };
        }),
      );
    const theirs = await answers(foreign.vm, foreign.network);
    expect(theirs).toEqual(await answers(madeUp, madeUp));
    expect(theirs.map((a) => a.status)).toEqual([431, 431, 431, 431, 431]);
    expect(JSON.stringify(theirs)).not.toContain("secret-project");
    // Nor was anything done to them: bob's tags are not on alice's VM.
    const untouched = await admin.get<VirtualMachine>(
      Resources.virtualMachines,
      "secret-project",
      namespaces.a,
    );
    expect(untouched.metadata.annotations).toBeUndefined();
  });

  it("keeps user data in a Secret that only the agent of the VM's host reads", async () => {
    const deployed = await call(ALICE, {
      command: "deployVirtualMachine",
      name: "with-data",
      serviceofferingid: ids.offering as string,
      templateid: ids.template as string,
      zoneid: ids.zone as string,
      userdata: USER_DATA,
    });
    expect(deployed.status).toBe(200);
    const vm = await admin.get<VirtualMachine>(Resources.virtualMachines, "with-data", namespaces.a);
    expect(vm.spec.userDataSecret).toBe("with-data-userdata");
    const secret = await admin.get<Secret>(SECRET, "with-data-userdata", namespaces.a);
    expect(secret.data?.userdata).toBe(USER_DATA);
    expect(secret.metadata.ownerReferences?.[0]).toMatchObject({
      kind: "VirtualMachine",
      uid: vm.metadata.uid,
    });
    const [agentA, agentB] = [agents.get(NODE_A), agents.get(NODE_B)] as [KubeClient, KubeClient];
    // Every agent reads every VM: none of them holds the user data.
    const everyVm = JSON.stringify(await agentB.list(Resources.virtualMachines));
    expect(everyVm).toContain("with-data");
    expect(everyVm).not.toContain(USER_DATA);
    expect(await refused(agentB.get(SECRET, "with-data-userdata", namespaces.a))).toMatchObject({
      status: 403,
    });
    // Bound to A: A's agent reads it, B's does not.
    const bindTo = (host: string) =>
      admin.mergePatch(Resources.virtualMachines, "with-data", namespaces.a, { status: { host } }, "status");
    await bindTo(NODE_A);
    expect((await userData(agentA, namespaces.a, "with-data")).userData).toBe(USER_DATA);
    expect(await refused(userData(agentB, namespaces.a, "with-data"))).toMatchObject({
      status: 403,
      message: expect.stringContaining(`only the agent of its host (${NODE_A}) may`),
    });
    // Nor does another account's user, whatever it asks.
    expect(await refused(userData(admin.impersonating(BOB), namespaces.a, "with-data"))).toMatchObject({
      status: 403,
    });
    // Moving live to B: B's agent reads it for the guest's config drive there, until the move ends.
    const move = await admin.create<VirtualMachineMigration>(Resources.virtualMachineMigrations, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VirtualMachineMigration",
      metadata: { name: "move-with-data", namespace: namespaces.a },
      spec: { vm: "with-data", targetHost: NODE_B },
    });
    const moveStatus = (phase: string) =>
      admin.mergePatch(
        Resources.virtualMachineMigrations,
        "move-with-data",
        namespaces.a,
        { status: { phase, sourceHost: NODE_A, targetHost: NODE_B } },
        "status",
      );
    await moveStatus("Running");
    expect((await userData(agentB, namespaces.a, "with-data")).userData).toBe(USER_DATA);
    await moveStatus("Failed");
    expect(await refused(userData(agentB, namespaces.a, "with-data"))).toMatchObject({ status: 403 });
    await admin.delete(Resources.virtualMachineMigrations, "move-with-data", namespaces.a, {
      uid: move.metadata.uid as string,
    });
    // Moved to B: now B's agent, and A's no longer; new user data reaches it the same way.
    await bindTo(NODE_B);
    const changed = Buffer.from("#cloud-config\npassword: changed\n").toString("base64");
    const updated = await call(ALICE, {
      command: "updateVirtualMachine",
      id: vm.metadata.uid as string,
      userdata: changed,
    });
    expect(updated.status).toBe(200);
    expect(JSON.stringify(updated.body)).not.toContain(changed);
    expect((await userData(agentB, namespaces.a, "with-data")).userData).toBe(changed);
    expect(await refused(userData(agentA, namespaces.a, "with-data"))).toMatchObject({ status: 403 });
  });
});

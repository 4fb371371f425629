// CloudStack accounts and users made through the API, against the real API server, the manifests'
// RBAC and admission policies, and the API component running as its own ServiceAccount: an
// administrator makes accounts and users with the real `cs` client, the users' registered keys
// work in their own account only, a user makes no account (531), bad input gets CloudStack's 431,
// deleteAccount leaves nothing behind, and the API component's new rights reach no object that is
// not an account's.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ACCOUNT_LABEL, CLUSTER_ROLE_BINDINGS, ROLE_BINDINGS } from "../../apiserver/account-records.ts";
import { API_KEY_LABEL, SECRET, type Secret } from "../../apiserver/api.ts";
import { canonicalString, sign } from "../../apiserver/signature.ts";
import { type AsyncJob, Resources } from "../../crds/index.ts";
import { APISERVICE } from "../../devcluster/aggregation.ts";
import { ApiError, KubeClient, type KubeObject, NAMESPACE } from "../../runtime/client.ts";
import { kubeConfigFrom } from "../../runtime/config.ts";
import { type Account, cs, hasCs, jobEnd, RBAC, signedRequest } from "./cloudstack-accounts.ts";
import { applyManifests, TestIdentities } from "./identities.ts";
import { logsOnFailure, type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const KEYS = "stratus-api-keys";
const ROOT = `root-${suffix}`;
const [TEAM_A, TEAM_B] = [`acc-a-${suffix}`, `acc-b-${suffix}`];
type Body = Record<string, unknown>;
const uidOf = (created: { metadata: object }) => (created.metadata as KubeObject["metadata"]).uid as string;

describe.skipIf(!hasCs)("accounts and users over the CloudStack API (needs python3-cs)", () => {
  let admin: KubeClient;
  let apiIdentity: KubeClient;
  let identities: TestIdentities;
  let workDir: string;
  let api: StratusProcess | undefined;
  let endpoint: string;
  let root: Account;
  const ids: Record<string, string> = {};
  const apply = (type: Parameters<KubeClient["apply"]>[0], object: Record<string, unknown>) =>
    admin.apply(type, object as KubeObject & Record<string, unknown>, { fieldManager: "accounts-test" });
  const bind = (name: string, namespace: string | undefined, role: string) =>
    apply(RBAC("v1", namespace ? "rolebindings" : "clusterrolebindings"), {
      metadata: { name, ...(namespace ? { namespace } : {}) },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: role },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: ROOT }],
    });
  /** A signed request's error code and text, or 200 and the answer; a form POST when it holds a password. */
  const answer = async (who: Account, params: Record<string, string>) => {
    if (!params.password) {
      const result = await signedRequest(endpoint, who, params);
      return { status: result.status, body: (Object.values(result.body)[0] ?? {}) as Body };
    }
    const signed = { apiKey: who.apiKey, response: "json", ...params };
    const form = new URLSearchParams({ ...signed, signature: sign(canonicalString(signed), who.secretKey) });
    const response = await fetch(endpoint, { method: "POST", body: form });
    const body = (await response.json()) as Record<string, Body>;
    return { status: response.status, body: (Object.values(body)[0] ?? {}) as Body };
  };
  const csAs = async (who: Account, command: string, args: Record<string, string>) => {
    const result = await cs(endpoint, who, command, args, { post: true });
    expect(result.ok, `${command}: ${result.stderr}`).toBe(true);
    return result.json as Body;
  };
  const userArgs = (username: string) => ({
    username,
    password: `pw-${username}`,
    email: `${username}@example.com`,
    firstname: "First",
    lastname: "Last",
  });
  const refusedWrite = async (write: Promise<unknown>) => {
    const error = (await write.then(
      () => undefined,
      (e: unknown) => e,
    )) as ApiError;
    expect(error).toBeInstanceOf(ApiError);
    return { status: error.status, message: error.message };
  };
  /** An account's user with keys registered by the administrator, once its keys authenticate. */
  const withKeys = async (userId: string, namespace: string): Promise<Account> => {
    const keys = (await csAs(root, "registerUserKeys", { id: userId })).userkeys as Body;
    const account = {
      user: userId,
      namespace,
      apiKey: keys.apikey as string,
      secretKey: keys.secretkey as string,
    };
    await waitFor("the new keys to authenticate", async () =>
      (await answer(account, { command: "listVirtualMachines" })).status === 200 ? true : undefined,
    );
    return account;
  };

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    admin = new KubeClient(controlPlane.kubeConfig);
    workDir = await mkdtemp(join(tmpdir(), "stratus-acc-"));
    identities = new TestIdentities(admin, workDir);
    await applyManifests();
    // The first administrator is made by hand, as an installation makes it.
    const namespace = await useNamespace(controlPlane.kubeConfig, "acc-root");
    await bind(`stratus-cloud-user-${ROOT}`, namespace, "stratus-cloud-user");
    for (const role of ["stratus-cloud-admin", "stratus-catalog-reader"])
      await bind(`${role}-${ROOT}`, undefined, role);
    await apply(RBAC("v1", "clusterroles"), {
      metadata: { name: `stratus-account-${ROOT}`, labels: { "stratus.io/tenant-identities": "true" } },
      rules: [{ apiGroups: [""], resources: ["users"], verbs: ["impersonate"], resourceNames: [ROOT] }],
    });
    root = {
      user: ROOT,
      namespace,
      apiKey: randomBytes(12).toString("hex"),
      secretKey: randomBytes(24).toString("base64"),
    };
    await admin.create(SECRET, {
      metadata: { name: `key-${ROOT}`, namespace: KEYS, labels: { [API_KEY_LABEL]: "true" } },
      stringData: { apiKey: root.apiKey, secretKey: root.secretKey, user: ROOT, account: namespace },
    } as KubeObject);
    const apiKubeconfig = await identities.serviceAccount("stratus-apiserver");
    apiIdentity = new KubeClient(kubeConfigFrom(apiKubeconfig));
    const started = await startApiServer({
      kubeconfigPath: apiKubeconfig,
      client: admin,
      identity: `acc-api-${suffix}`,
      keysNamespace: KEYS,
    });
    api = started.process;
    endpoint = started.endpoint;
    const zone = await admin.create(Resources.zones, { metadata: { name: `acc-${suffix}` }, spec: {} });
    const offering = await admin.create(Resources.serviceOfferings, {
      metadata: { name: `acc-small-${suffix}` },
      spec: { cpu: 1, memory: "64Mi" },
    });
    const template = await admin.create(Resources.templates, {
      metadata: { name: `acc-tiny-${suffix}` },
      spec: { source: { url: "http://127.0.0.1:9/none.qcow2" } },
    });
    Object.assign(ids, {
      zone: uidOf(zone),
      offering: uidOf(offering),
      template: uidOf(template),
    });
    await waitFor("the administrator's identity aggregated", async () =>
      (await answer(root, { command: "listAccounts" })).status === 200 ? true : undefined,
    );
  });

  logsOnFailure(() => [api]);

  afterAll(async () => {
    await api?.stop("SIGKILL");
    for (const account of [TEAM_A, TEAM_B]) await admin.delete(NAMESPACE, account).catch(() => undefined);
    const made = await admin.list<Secret>(SECRET, { namespace: KEYS, labelSelector: ACCOUNT_LABEL });
    for (const secret of made.items.filter((s) => s.metadata.labels?.[ACCOUNT_LABEL]?.endsWith(suffix)))
      await admin.delete(SECRET, secret.metadata.name as string, KEYS).catch(() => undefined);
    await admin.delete(SECRET, `key-${ROOT}`, KEYS).catch(() => undefined);
    await admin.delete(RBAC("v1", "clusterroles"), `stratus-account-${ROOT}`).catch(() => undefined);
    await apiIdentity?.close();
    await identities?.cleanup();
    await admin?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("makes accounts and users whose own keys work in their account only; a user makes no account", async () => {
    const created = await csAs(root, "createAccount", {
      ...userArgs(`ann-${suffix}`),
      account: TEAM_A,
      accounttype: "0",
    });
    expect(created.account).toMatchObject({
      name: TEAM_A,
      accounttype: 0,
      roletype: "User",
      domain: "ROOT",
      user: [
        expect.objectContaining({
          username: `ann-${suffix}`,
          account: TEAM_A,
          email: `ann-${suffix}@example.com`,
        }),
      ],
    });
    const namespace = await admin.get(NAMESPACE, TEAM_A);
    expect(namespace.metadata.labels?.[ACCOUNT_LABEL]).toBe(TEAM_A);
    const ben = (await csAs(root, "createUser", { ...userArgs(`ben-${suffix}`), account: TEAM_A }))
      .user as Body;
    expect(ben).toMatchObject({
      username: `ben-${suffix}`,
      account: TEAM_A,
      accountid: namespace.metadata.uid,
    });
    // The account's identities name exactly its users, as the API component's admission allows.
    const identitiesRole = await admin.get<KubeObject & { rules: { resourceNames: string[] }[] }>(
      RBAC("v1", "clusterroles"),
      `stratus-account-${TEAM_A}`,
    );
    expect(identitiesRole.rules[0]?.resourceNames).toEqual([
      `cloudstack:${TEAM_A}:ann-${suffix}`,
      `cloudstack:${TEAM_A}:ben-${suffix}`,
    ]);
    const listed = await csAs(root, "listUsers", { account: TEAM_A });
    expect((listed.user as Body[]).map((u) => u.username)).toEqual([`ann-${suffix}`, `ben-${suffix}`]);

    const benAccount = await withKeys(ben.id as string, TEAM_A);
    const own = await answer(benAccount, { command: "getUserKeys", id: ben.id as string });
    expect(own.body.userkeys).toEqual({ apikey: benAccount.apiKey, secretkey: benAccount.secretKey });
    const network = await answer(benAccount, {
      command: "createNetwork",
      name: "net",
      networkofferingid: "x",
      zoneid: ids.zone as string,
    });
    expect(network.status, JSON.stringify(network.body)).toBe(200);
    const deployed = await answer(benAccount, {
      command: "deployVirtualMachine",
      name: "web",
      serviceofferingid: ids.offering as string,
      templateid: ids.template as string,
      zoneid: ids.zone as string,
    });
    expect(deployed.status, JSON.stringify(deployed.body)).toBe(200);
    const vms = await answer(benAccount, { command: "listVirtualMachines" });
    expect((vms.body.virtualmachine as Body[]).map((vm) => [vm.name, vm.account])).toEqual([["web", TEAM_A]]);
    expect((await admin.get(Resources.virtualMachines, "web", TEAM_A)).metadata.name).toBe("web");

    // Another account sees nothing of the first, and its user none of the first's keys.
    const other = await csAs(root, "createAccount", { ...userArgs(`cat-${suffix}`), account: TEAM_B });
    const cat = ((other.account as Body).user as Body[])[0] as Body;
    const catAccount = await withKeys(cat.id as string, TEAM_B);
    expect((await answer(catAccount, { command: "listVirtualMachines" })).body).toEqual({});
    expect((await answer(catAccount, { command: "listVirtualMachines", listall: "true" })).body).toEqual({});
    expect((await answer(catAccount, { command: "getUserKeys", id: ben.id as string })).status).toBe(431);
    // A user lists its own account and its users only, as in CloudStack.
    const ownAccounts = (await answer(catAccount, { command: "listAccounts" })).body;
    expect(ownAccounts.count).toBe(1);
    expect((ownAccounts.account as Body[])[0]).toMatchObject({ name: TEAM_B });
    expect((await answer(catAccount, { command: "listAccounts", name: TEAM_A })).body).toEqual({});
    const ownUsers = (await answer(catAccount, { command: "listUsers" })).body;
    expect((ownUsers.user as Body[]).map((u) => u.username)).toEqual([`cat-${suffix}`]);
    // A user is no administrator: 531 for the account and user commands that change or reach others.
    for (const params of [
      { command: "createAccount", ...userArgs(`eve-${suffix}`), account: `acc-e-${suffix}` },
      { command: "createUser", ...userArgs(`eve-${suffix}`), account: TEAM_B },
      { command: "listUsers", account: TEAM_A },
      { command: "deleteAccount", id: namespace.metadata.uid as string },
      { command: "deleteUser", id: ben.id as string },
    ]) {
      const refused = await answer(catAccount, params);
      expect(refused.status, params.command).toBe(531);
      expect(refused.body.errortext).toContain("not an administrator");
    }
    await expect(admin.get(NAMESPACE, `acc-e-${suffix}`)).rejects.toThrow();

    // Login works for users made this way; the password is kept only as a hash.
    const login = await fetch(endpoint, {
      method: "POST",
      body: new URLSearchParams({
        command: "login",
        username: `ann-${suffix}`,
        password: `pw-ann-${suffix}`,
        response: "json",
      }),
    });
    expect(login.status).toBe(200);
    expect(((await login.json()) as Record<string, Body>).loginresponse?.account).toBe(TEAM_A);
    const records = await admin.list<Secret>(SECRET, {
      namespace: KEYS,
      labelSelector: `${ACCOUNT_LABEL}=${TEAM_A}`,
    });
    for (const record of records.items) {
      expect(record.data?.password).toBeUndefined();
      expect(Buffer.from(record.data?.passwordHash ?? "", "base64").toString()).toMatch(/^scrypt\$/);
    }

    // deleteUser removes the user's record, bindings and identity.
    expect((await answer(root, { command: "deleteUser", id: ben.id as string })).status).toBe(200);
    const afterDelete = await admin.get<KubeObject & { rules: { resourceNames: string[] }[] }>(
      RBAC("v1", "clusterroles"),
      `stratus-account-${TEAM_A}`,
    );
    expect(afterDelete.rules[0]?.resourceNames).toEqual([`cloudstack:${TEAM_A}:ann-${suffix}`]);
    await waitFor("ben's keys refused", async () =>
      (await answer(benAccount, { command: "listVirtualMachines" })).status === 401 ? true : undefined,
    );
  });

  it("answers bad input with CloudStack's 431", async () => {
    const create = (args: Record<string, string>) =>
      answer(root, { command: "createAccount", ...userArgs(`dan-${suffix}`), ...args });
    const inUrl = await signedRequest(endpoint, root, {
      command: "createAccount",
      ...userArgs(`dan-${suffix}`),
      account: `acc-d-${suffix}`,
    });
    expect(inUrl.status).toBe(405);
    const badName = await create({ account: "Team_A" });
    expect(badName).toMatchObject({ status: 431, body: { errortext: expect.stringContaining("DNS label") } });
    expect((await create({ account: "kube-system" })).status).toBe(431);
    expect((await create({ account: `acc-d-${suffix}`, accounttype: "2" })).status).toBe(431);
    const duplicateAccount = await create({ account: TEAM_A });
    expect(duplicateAccount).toMatchObject({
      status: 431,
      body: { errortext: expect.stringContaining("already exists") },
    });
    const duplicateUser = await answer(root, {
      command: "createAccount",
      ...userArgs(`ann-${suffix}`),
      account: `acc-d-${suffix}`,
    });
    expect(duplicateUser).toMatchObject({
      status: 431,
      body: { errortext: `The user ann-${suffix} already exists in domain ROOT` },
    });
    // Nothing was made for the refused ones.
    await expect(admin.get(NAMESPACE, `acc-d-${suffix}`)).rejects.toThrow();
    const duplicateInAccount = await answer(root, {
      command: "createUser",
      ...userArgs(`ann-${suffix}`),
      account: TEAM_A,
    });
    expect(duplicateInAccount.status).toBe(431);
    expect(
      (await answer(root, { command: "createUser", ...userArgs(`x-${suffix}`), account: `none-${suffix}` }))
        .status,
    ).toBe(431);
  });

  // TEAM_B only: TEAM_A's VM keeps its finalizer without an operator here, so its namespace stays.
  it("deletes an account with everything made for it: its namespace and RBAC; says what it waits for", async () => {
    const name = TEAM_B;
    const accounts = await answer(root, { command: "listAccounts", name });
    const account = (accounts.body.account as Body[])[0] as Body;
    // An aggregated API that does not answer keeps Kubernetes from deleting any namespace (it cannot
    // list what the namespace holds there): the job says so, and ends once the API is gone.
    const blocker = `v1.blocker-${suffix}.test.stratus.io`;
    await admin.create(APISERVICE, {
      metadata: { name: blocker },
      spec: {
        group: `blocker-${suffix}.test.stratus.io`,
        version: "v1",
        service: { namespace: "default", name: `nowhere-${suffix}` },
        insecureSkipTLSVerify: true,
        groupPriorityMinimum: 1000,
        versionPriority: 15,
      },
    } as KubeObject);
    const submitted = await answer(root, { command: "deleteAccount", id: account.id as string });
    expect(submitted.status).toBe(200);
    const jobid = submitted.body.jobid as string;
    const waiting = await waitFor("the job to say what it waits for", async () => {
      const jobs = await admin.listAll<AsyncJob>(Resources.asyncJobs);
      const said = jobs.items.find((job) => job.metadata.uid === jobid)?.status?.waitingFor;
      return said?.includes("NamespaceDeletionDiscoveryFailure") ? said : undefined;
    }).finally(() => admin.delete(APISERVICE, blocker));
    expect(waiting).toContain(`namespace ${name} to be deleted`);
    expect(waiting).toContain(`blocker-${suffix}.test.stratus.io`);
    const job = await jobEnd(endpoint, root, jobid, "deleteAccount");
    expect(job).toMatchObject({ jobstatus: 1, jobresult: { success: true } });
    await expect(admin.get(NAMESPACE, name)).rejects.toThrow();
    const selector = `${ACCOUNT_LABEL}=${name}`;
    expect((await admin.list(SECRET, { namespace: KEYS, labelSelector: selector })).items).toEqual([]);
    expect((await admin.list(CLUSTER_ROLE_BINDINGS, { labelSelector: selector })).items).toEqual([]);
    expect((await admin.list(ROLE_BINDINGS, { labelSelector: selector })).items).toEqual([]);
    await expect(admin.get(RBAC("v1", "clusterroles"), `stratus-account-${name}`)).rejects.toThrow();
    expect((await answer(root, { command: "listAccounts", name })).body).toEqual({});
  });

  it("lets the API component write no RBAC and delete no namespace but an account's", async () => {
    const plain = await useNamespace((await sharedControlPlane()).kubeConfig, "acc-plain");
    const denied = await refusedWrite(apiIdentity.delete(NAMESPACE, plain));
    expect(denied).toMatchObject({ status: 403, message: expect.stringContaining("stratus.io/account") });
    const wide = await refusedWrite(
      apiIdentity.create(RBAC("v1", "clusterroles"), {
        metadata: { name: `wide-${suffix}`, labels: { [ACCOUNT_LABEL]: "x" } },
        rules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }],
      } as KubeObject),
    );
    expect(wide.status).toBe(403);
    const masters = await refusedWrite(
      apiIdentity.create(RBAC("v1", "clusterroles"), {
        metadata: {
          name: `masters-${suffix}`,
          labels: { [ACCOUNT_LABEL]: "x", "stratus.io/tenant-identities": "true" },
        },
        rules: [
          {
            apiGroups: [""],
            resources: ["groups"],
            verbs: ["impersonate"],
            resourceNames: ["system:masters"],
          },
        ],
      } as KubeObject),
    );
    expect(masters.status).toBe(403);
    const adminBinding = await refusedWrite(
      apiIdentity.create(RBAC("v1", "clusterrolebindings"), {
        metadata: { name: `cluster-admin-${suffix}`, labels: { [ACCOUNT_LABEL]: "x" } },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "cluster-admin" },
        subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: "eve" }],
      } as KubeObject),
    );
    expect(adminBinding.status).toBe(403);
    // Nor may it take over a role it did not make by labelling it as an account's.
    await apply(RBAC("v1", "clusterroles"), {
      metadata: { name: `plain-${suffix}` },
      rules: [{ apiGroups: [""], resources: ["pods"], verbs: ["get"] }],
    });
    const relabelled = await refusedWrite(
      apiIdentity.mergePatch(RBAC("v1", "clusterroles"), `plain-${suffix}`, undefined, {
        metadata: { labels: { [ACCOUNT_LABEL]: "x", "stratus.io/tenant-identities": "true" } },
        rules: [{ apiGroups: [""], resources: ["users"], verbs: ["impersonate"], resourceNames: ["eve"] }],
      }),
    );
    expect(relabelled).toMatchObject({ status: 403, message: expect.stringContaining("never relabels") });
    await admin.delete(RBAC("v1", "clusterroles"), `plain-${suffix}`);
  });
});

// Accounts in a running cloud, with the real `cs` client, the API component, an operator and two
// simulated hosts. Resource limits (updateResourceLimit, listResourceLimits, updateResourceCount):
// 50 VMs created at once through kubectl against a limit of 10 admit exactly 10 (kube-apiserver's
// quota admission), the CloudStack front door answers the 11th with 535, a CPU limit holds the VMs
// past it with a condition that says so until the limit is raised, a primary-storage limit grants
// exactly what fits of 50 volumes made at once (and createVolume past it answers 535, leaving
// nothing), and a user neither raises a limit through the API nor edits the ResourceQuota with
// kubectl. deleteAccount of an account that runs a
// VM releases everything before its job ends. 5,000 fuzzed account and limit requests.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT_DOMAIN_ID } from "../../apiserver/envelope.ts";
import { Resources, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { RESOURCE_LIMITS_QUOTA, RESOURCE_QUOTAS, type ResourceQuota } from "../../crds/resource-limits.ts";
import { type ApiError, KubeClient, type KubeObject, NAMESPACE } from "../../runtime/client.ts";
import {
  type Account,
  adminAndUser,
  bindCloudUserRole,
  hasCs,
  jobOf,
  makeAccount,
  cs as runCs,
  signedRequest,
} from "./cloudstack-accounts.ts";
import { fuzzRequests } from "./fuzz.ts";
import { logsOnFailure, type StratusProcess, startCloudStackCloud } from "./processes.ts";
import { createdUid, serveTinyImage, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `rl-zone-${suffix}`;
const HOSTS = [`rl-h1-${suffix}`, `rl-h2-${suffix}`];
const OFFERING = `rl-small-${suffix}`;
const TEMPLATE = `rl-tiny-${suffix}`;
const NETWORK_OFFERING = "5ce0b2e4-6d1c-4f2b-9a57-2a0f3d8b1c01";
type Row = Record<string, unknown>;

describe.skipIf(!hasCs)("accounts' resource limits (needs python3-cs)", () => {
  let client: KubeClient;
  let endpoint: string;
  let workDir: string;
  let processes: StratusProcess[] = [];
  let admin: Account;
  let user: Account;
  let second: Account;
  let third: Account;
  const ids = { zone: "", small: "", template: "" };

  const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
    runCs(endpoint, account, command, args);
  async function answer(account: Account, params: Record<string, string>) {
    const response = await signedRequest(endpoint, account, params);
    const body = response.body[`${(params.command as string).toLowerCase()}response`] as Row;
    return { status: response.status, body };
  }
  async function limit(account: Account, resourcetype: string, max: number) {
    const set = await cs(admin, "updateResourceLimit", {
      account: account.namespace,
      resourcetype,
      max: String(max),
    });
    expect(set.stderr, set.stdout).toBe("");
    return set.json.resourcelimit as Row;
  }
  /** kube-apiserver enforces a quota only once kube-controller-manager has computed its status. */
  const quotaCounts = (account: Account, key: string) =>
    waitFor(
      `the quota of ${account.namespace} to count ${key}`,
      async () => {
        const quota = await client.get<ResourceQuota & { status?: { used?: Record<string, string> } }>(
          RESOURCE_QUOTAS,
          RESOURCE_LIMITS_QUOTA,
          account.namespace,
        );
        return quota.status?.used?.[key] !== undefined;
      },
      { timeoutMs: 120_000 },
    );
  const vmObject = (account: Account, name: string) =>
    ({
      metadata: { name, namespace: account.namespace },
      spec: { zone: ZONE, serviceOffering: OFFERING, template: TEMPLATE },
    }) as KubeObject;
  const vmsOf = async (account: Account) =>
    (await client.list<VirtualMachine>(Resources.virtualMachines, { namespace: account.namespace })).items;

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "rlkeys");
    ({ admin, user } = await adminAndUser(client, { keysNamespace, suffix, prefix: "rl" }));
    second = await makeAccount(client, {
      keysNamespace,
      name: "rl-second",
      suffix,
      clusterRoles: [`stratus-catalog-reader-${suffix}`],
    });
    third = await makeAccount(client, {
      keysNamespace,
      name: "rl-third",
      suffix,
      clusterRoles: [`stratus-catalog-reader-${suffix}`],
    });
    // The manifests' own tenant role: what a user may do with the ResourceQuota comes from it.
    await bindCloudUserRole(client, suffix, [user, second, third]);
    workDir = await mkdtemp(join(tmpdir(), "stratus-rl-"));
    const { url, checksum } = await serveTinyImage();
    ids.zone = await createdUid(client, Resources.zones, ZONE, {});
    ids.small = await createdUid(client, Resources.serviceOfferings, OFFERING, { cpu: 1, memory: "64Mi" });
    ids.template = await createdUid(client, Resources.templates, TEMPLATE, { source: { url }, checksum });
    // Its processes are killed after this file (startCloudStackCloud).
    ({ processes, endpoint } = await startCloudStackCloud({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      prefix: `rl-${suffix}`,
      zone: ZONE,
      hosts: HOSTS,
      keysNamespace,
      workDir,
    }));
  });

  logsOnFailure(() => processes);

  afterAll(async () => {
    await client?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("admits exactly 10 of 50 VMs created at once through kubectl against a limit of 10; the API answers the 11th with 535", async () => {
    const set = await limit(user, "0", 10);
    expect(set).toMatchObject({
      account: user.namespace,
      max: 10,
      resourcetype: "0",
      resourcetypename: "user_vm",
    });
    await quotaCounts(user, "count/virtualmachines.stratus.io");
    const asUser = client.impersonating(user.user);
    const created = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) =>
        asUser.create(Resources.virtualMachines, vmObject(user, `burst-${i}`)),
      ),
    );
    const refused = created.flatMap((c) => (c.status === "rejected" ? [c.reason as ApiError] : []));
    expect(
      created.filter((c) => c.status === "fulfilled"),
      refused[0]?.message,
    ).toHaveLength(10);
    expect(refused).toHaveLength(40);
    for (const error of refused) {
      expect(error.status).toBe(403);
      expect(error.message).toContain("exceeded quota: stratus-resource-limits");
    }
    expect(await vmsOf(user)).toHaveLength(10);

    const network = await cs(user, "createNetwork", {
      name: "main",
      displaytext: "main",
      networkofferingid: NETWORK_OFFERING,
      zoneid: ids.zone,
      gateway: "10.73.0.1",
      netmask: "255.255.255.0",
    });
    expect(network.stderr).toBe("");
    const eleventh = await answer(user, {
      command: "deployVirtualMachine",
      serviceofferingid: ids.small,
      templateid: ids.template,
      zoneid: ids.zone,
      name: "eleventh",
    });
    expect(eleventh.status, JSON.stringify(eleventh.body)).toBe(535);
    expect(eleventh.body.errortext).toContain("Maximum number of resources of type 'user_vm'");
    expect(eleventh.body.cserrorcode).toBe(4370);

    // As CloudStack lists them: every type, -1 where there is no limit.
    const listed = (await cs(user, "listResourceLimits")).json.resourcelimit as Row[];
    expect(listed).toHaveLength(12);
    expect(listed.find((l) => l.resourcetype === "0")?.max).toBe(10);
    expect(listed.find((l) => l.resourcetype === "8")?.max).toBe(-1);
    const counted = (
      await cs(admin, "updateResourceCount", {
        domainid: ROOT_DOMAIN_ID,
        account: user.namespace,
        resourcetype: "0",
      })
    ).json.resourcecount as Row[];
    expect(counted).toEqual([expect.objectContaining({ resourcecount: 10, resourcetypename: "user_vm" })]);
  });

  it("holds VMs past the account's CPU limit with a condition that says so, and places them once it is raised", async () => {
    await limit(second, "8", 3);
    const asSecond = client.impersonating(second.user);
    await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        asSecond.create(Resources.virtualMachines, vmObject(second, `cpu-${i}`)),
      ),
    );
    const settled = await waitFor("three VMs placed and two held", async () => {
      const vms = await vmsOf(second);
      const held = vms.filter((vm) =>
        vm.status?.conditions?.some((c) => c.type === "Scheduled" && c.reason === "ResourceLimitExceeded"),
      );
      return vms.filter((vm) => vm.status?.host).length === 3 && held.length === 2 ? held : undefined;
    });
    expect(settled[0]?.status?.conditions?.find((c) => c.type === "Scheduled")?.message).toContain(
      "3 of 3 CPUs in use, this VM needs 1",
    );
    const counted = (await cs(second, "updateResourceCount", { domainid: ROOT_DOMAIN_ID, resourcetype: "8" }))
      .json.resourcecount as Row[];
    expect(counted[0]?.resourcecount).toBe(3);

    await limit(second, "8", 5);
    await waitFor("all five VMs placed", async () =>
      (await vmsOf(second)).every((vm) => vm.status?.host) ? true : undefined,
    );
    // -1 lifts the limit: the key leaves the quota, the other limits stay.
    await limit(second, "0", 20);
    await limit(second, "8", -1);
    const quota = await client.get<ResourceQuota>(RESOURCE_QUOTAS, RESOURCE_LIMITS_QUOTA, second.namespace);
    expect(quota.spec?.hard).toEqual({ "count/virtualmachines.stratus.io": "20" });
  });

  it("grants primary storage up to the account's limit: exactly 10 of 50 1 GiB volumes made at once, then nothing past it", async () => {
    expect(await limit(third, "10", 10)).toMatchObject({ max: 10, resourcetypename: "primary_storage" });
    const asThird = client.impersonating(third.user);
    const volumeObject = (name: string, size = "1Gi") =>
      ({ metadata: { name, namespace: third.namespace }, spec: { zone: ZONE, size } }) as Volume;
    await Promise.all(
      Array.from({ length: 50 }, (_, i) => asThird.create(Resources.volumes, volumeObject(`burst-${i}`))),
    );
    const admittedOf = (volume: Volume) => volume.status?.conditions?.find((c) => c.type === "Admitted");
    const decided = await waitFor("every volume admitted or held", async () => {
      const volumes = (await client.list<Volume>(Resources.volumes, { namespace: third.namespace })).items;
      return volumes.length === 50 && volumes.every((v) => admittedOf(v)) ? volumes : undefined;
    });
    const granted = decided.filter((v) => admittedOf(v)?.status === "True");
    expect(granted).toHaveLength(10);
    for (const volume of granted) expect(volume.status?.admittedSize).toBe("1Gi");
    const held = decided.filter((v) => admittedOf(v)?.status === "False");
    expect(held).toHaveLength(40);
    expect(admittedOf(held[0] as Volume)).toMatchObject({
      reason: "ResourceLimitExceeded",
      message: expect.stringContaining(
        `Maximum number of resources of type 'primary_storage' for account ${third.namespace} has been exceeded: 10 GiB of 10 GiB in use`,
      ),
    });
    const counted = (await cs(third, "updateResourceCount", { domainid: ROOT_DOMAIN_ID, resourcetype: "10" }))
      .json.resourcecount as Row[];
    expect(counted).toEqual([
      expect.objectContaining({ resourcecount: 10, resourcetypename: "primary_storage" }),
    ]);

    // A VM's ROOT volume counts too: the VM is not placed, and says why.
    await asThird.create(Resources.virtualMachines, vmObject(third, "over-storage"));
    const waiting = await waitFor("the VM held by the storage limit", async () => {
      const vm = (await vmsOf(third)).find((v) => v.metadata.name === "over-storage");
      const volumes = vm?.status?.conditions?.find((c) => c.type === "VolumesReady");
      return volumes?.reason === "ResourceLimitExceeded" ? vm : undefined;
    });
    expect(waiting.status?.host).toBeUndefined();

    // The CloudStack front door: createVolume past the limit fails with 535 and leaves no volume.
    const refusedWithLimit = {
      jobstatus: 2,
      jobresultcode: 535,
      jobresult: { errorcode: 535, errortext: expect.stringContaining("'primary_storage'") },
    };
    const refused = await jobOf(endpoint, third, {
      command: "createVolume",
      name: "one-more",
      zoneid: ids.zone,
      size: "1",
    });
    expect(refused.job).toMatchObject(refusedWithLimit);
    await waitFor("the refused volume gone", async () =>
      (await client.list<Volume>(Resources.volumes, { namespace: third.namespace })).items.some(
        (v) => v.metadata.name === "one-more",
      )
        ? undefined
        : true,
    );

    // A deploy past it fails with 535 too; its VM is halted in Error, as CloudStack leaves none running.
    const deploy = await jobOf(endpoint, third, {
      command: "deployVirtualMachine",
      serviceofferingid: ids.small,
      templateid: ids.template,
      zoneid: ids.zone,
      name: "deployed-over-storage",
    });
    expect(deploy.job).toMatchObject(refusedWithLimit);
    const halted = await client.get<VirtualMachine>(
      Resources.virtualMachines,
      "deployed-over-storage",
      third.namespace,
    );
    expect(halted.spec.runStrategy).toBe("Halted");

    // Room for all: every held volume is granted, and the VM is placed.
    await limit(third, "10", 100);
    const placed = await waitFor("all volumes granted and the VM placed", async () => {
      const volumes = (await client.list<Volume>(Resources.volumes, { namespace: third.namespace })).items;
      const vm = (await vmsOf(third)).find((v) => v.metadata.name === "over-storage");
      return volumes.every((v) => admittedOf(v)?.status === "True") && vm?.status?.host ? vm : undefined;
    });

    // A placed VM too: a held volume attached to it gets no disk from its host, and the VM says why.
    const used = (await cs(third, "updateResourceCount", { domainid: ROOT_DOMAIN_ID, resourcetype: "10" }))
      .json.resourcecount as Row[];
    await limit(third, "10", used[0]?.resourcecount as number);
    const late = await asThird.create<Volume>(Resources.volumes, volumeObject("late"));
    await waitFor("the late volume held", async () =>
      admittedOf(await client.get<Volume>(Resources.volumes, "late", third.namespace))?.status === "False"
        ? true
        : undefined,
    );
    const attach = await jobOf(endpoint, third, {
      command: "attachVolume",
      id: late.metadata.uid as string,
      virtualmachineid: placed.metadata.uid as string,
    });
    expect(attach.job).toMatchObject(refusedWithLimit);
    await waitFor("the VM saying its volume is held", async () => {
      const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "over-storage", third.namespace);
      const volumes = vm.status?.conditions?.find((c) => c.type === "VolumesReady");
      return vm.spec.dataVolumes?.some((d) => d.volume === "late") &&
        volumes?.reason === "ResourceLimitExceeded"
        ? true
        : undefined;
    });
    expect(
      (await client.get<Volume>(Resources.volumes, "late", third.namespace)).status?.host,
    ).toBeUndefined();
  });

  it("lets no user raise a limit, through the API or kubectl; refuses what it cannot limit", async () => {
    const raise = await answer(user, {
      command: "updateResourceLimit",
      account: user.namespace,
      resourcetype: "0",
      max: "1000",
    });
    expect(raise.status).toBe(531);
    const viaKubectl = await client
      .impersonating(user.user)
      .apply(
        RESOURCE_QUOTAS,
        {
          metadata: { name: RESOURCE_LIMITS_QUOTA, namespace: user.namespace },
          spec: { hard: { "count/virtualmachines.stratus.io": "1000" } },
        },
        { fieldManager: "tenant" },
      )
      .catch((error: ApiError) => error);
    expect((viaKubectl as ApiError).status).toBe(403);
    // Another account's limits are an administrator's to read.
    expect((await answer(user, { command: "listResourceLimits", account: second.namespace })).status).toBe(
      531,
    );

    const refusedType = await answer(admin, {
      command: "updateResourceLimit",
      account: user.namespace,
      resourcetype: "11",
      max: "100",
    });
    expect(refusedType).toMatchObject({
      status: 431,
      body: { errortext: expect.stringContaining("cannot be limited") },
    });
    for (const bad of [
      { resourcetype: "0", max: "-5" },
      { resourcetype: "12", max: "1" },
      { resourcetype: "0", max: "ten" },
    ])
      expect(
        (await answer(admin, { command: "updateResourceLimit", account: user.namespace, ...bad })).status,
      ).toBe(431);
    // No such account, and a system namespace, which is no account.
    for (const account of [`none-${suffix}`, "kube-system"])
      expect(
        (await answer(admin, { command: "updateResourceLimit", account, resourcetype: "0", max: "1" }))
          .status,
      ).toBe(431);
  });

  it("deletes an account that still runs a VM: its VM, volumes and network are released, then the job ends", async () => {
    const account = `rl-del-${suffix}`;
    // A password goes in the POST body only.
    const made = await runCs(
      endpoint,
      admin,
      "createAccount",
      {
        account,
        username: `del-${suffix}`,
        password: `pw-del-${suffix}`,
        email: "del@example.com",
        firstname: "Del",
        lastname: "Ete",
      },
      { post: true },
    );
    expect(made.stderr, made.stdout).toBe("");
    await client.create(Resources.networks, {
      metadata: { name: "main", namespace: account },
      spec: { zone: ZONE, type: "Isolated", cidr: "10.74.0.0/24", gateway: "10.74.0.1" },
    } as KubeObject);
    await client.create(Resources.virtualMachines, {
      metadata: { name: "worker", namespace: account },
      spec: {
        zone: ZONE,
        serviceOffering: OFFERING,
        template: TEMPLATE,
        nics: [{ name: "eth0", network: "main" }],
      },
    } as KubeObject);
    const running = await waitFor("the account's VM Running", async () => {
      const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "worker", account);
      return vm.status?.state === "Running" ? vm : undefined;
    });
    const domainsOf = async (host: string) => {
      const agent = processes.find((p) => p.identity === host);
      return JSON.parse((await (agent as StratusProcess).get("/debug/domains")).body) as { name: string }[];
    };
    const domain = `stratus-${running.metadata.uid}`;
    expect((await domainsOf(running.status?.host as string)).map((d) => d.name)).toContain(domain);
    const id = ((await cs(admin, "listAccounts", { name: account })).json.account as Row[])[0]?.id as string;
    const deleted = await jobOf(endpoint, admin, { command: "deleteAccount", id });
    expect(deleted.job, JSON.stringify(deleted.body)).toMatchObject({
      jobstatus: 1,
      jobresult: { success: true },
    });
    await expect(client.get(NAMESPACE, account)).rejects.toThrow();
    // Nothing of it is left on the hosts either.
    for (const host of HOSTS) expect((await domainsOf(host)).map((d) => d.name)).not.toContain(domain);
  });

  it("answers 5,000 fuzzed account and limit requests, an administrator's and a user's, with CloudStack's own codes", async () => {
    const values = [
      "",
      "x",
      "-1",
      "0",
      "8",
      "12",
      "memory",
      "99999999999999999999",
      "%00",
      "a".repeat(300),
      "true",
      ROOT_DOMAIN_ID,
      user.namespace,
      second.namespace,
      "kube-system",
      randomBytes(16)
        .toString("hex")
        .replace(/^(.{8})(.{4})(.{4})(.{4})/, "$1-$2-$3-$4-"),
    ];
    const commands = [
      "listResourceLimits",
      "updateResourceLimit",
      "updateResourceCount",
      "listAccounts",
      "listUsers",
      "createAccount",
      "createUser",
      "deleteUser",
      "getUserKeys",
    ];
    const parameters = [
      "account",
      "domainid",
      "resourcetype",
      "resourcetypename",
      "max",
      "id",
      "name",
      "username",
      "keyword",
      "page",
      "pagesize",
    ];
    const allowed = new Set([200, 430, 431, 432, 531, 534, 535]);
    for (const [account, seed] of [
      [user, 16],
      [admin, 61],
    ] as const) {
      const seen = await fuzzRequests({
        endpoint,
        account,
        commands,
        parameters,
        values,
        allowed,
        total: 2_500,
        seed,
      });
      expect(seen.get(200)).toBeGreaterThan(0);
      expect(seen.get(431)).toBeGreaterThan(0);
    }
    // An administrator's fuzzing changed limits, never made an account it was not asked for.
    expect((await client.get(NAMESPACE, "x").catch(() => undefined))?.metadata.name).toBeUndefined();
  });
});

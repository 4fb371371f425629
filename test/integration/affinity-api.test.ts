// CloudStack's affinity groups through the real `cs` client against the real API component, an
// operator and two simulated hosts: each command, where the VMs land (apart for host
// anti-affinity, together for host affinity, also when deployed at once), a deploy no host fits
// failing with the group's reason, another account's group answering as an unknown id (431), the
// bad input CloudStack refuses, a data disk made and attached from deploy's diskofferingid, and
// 5,000 fuzzed requests answered with CloudStack's codes.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources } from "../../crds/index.ts";
import { KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import {
  type Account,
  catalogReaderRole,
  hasCs,
  makeAccount,
  cs as runCs,
  signedRequest,
  jobOf as submitAndWait,
} from "./cloudstack-accounts.ts";
import { fuzzRequests } from "./fuzz.ts";
import { logsOnFailure, type StratusProcess, startCloudStackCloud } from "./processes.ts";
import { createdUid, serveTinyImage, sharedControlPlane, useNamespace } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `aff-zone-${suffix}`;
const HOSTS = [`aff-h1-${suffix}`, `aff-h2-${suffix}`];
const NETWORK_OFFERING = "5ce0b2e4-6d1c-4f2b-9a57-2a0f3d8b1c01";
type Row = Record<string, unknown>;

describe.skipIf(!hasCs)("CloudStack affinity groups (needs python3-cs)", () => {
  let client: KubeClient;
  let endpoint: string;
  let workDir: string;
  const processes: StratusProcess[] = [];
  let alice: Account;
  let bob: Account;
  const ids = { zone: "", small: "", template: "", disk: "", custom: "", spread: "", together: "" };

  const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
    runCs(endpoint, account, command, args);
  /** A refusal as the client sees it: HTTP status and CloudStack's error body. */
  async function refusal(account: Account, params: Record<string, string>) {
    const response = await signedRequest(endpoint, account, params);
    const body = response.body[`${(params.command as string).toLowerCase()}response`] as Row;
    return { status: response.status, errorcode: body.errorcode, errortext: String(body.errortext) };
  }
  /** An async command submitted by hand, polled to its end: the job's body. */
  async function jobOf(account: Account, params: Record<string, string>): Promise<Row> {
    const { status, body, job } = await submitAndWait(endpoint, account, params);
    expect(status, JSON.stringify(body)).toBe(200);
    return job as Row;
  }
  const deployParams = (name: string, extra: Record<string, string> = {}) => ({
    command: "deployVirtualMachine",
    serviceofferingid: ids.small,
    templateid: ids.template,
    zoneid: ids.zone,
    name,
    ...extra,
  });
  async function deploy(account: Account, name: string, extra: Record<string, string> = {}): Promise<Row> {
    const { command, ...params } = deployParams(name, extra);
    const deployed = await cs(account, command, params);
    expect(deployed.stderr, deployed.stdout).toBe("");
    return deployed.json.virtualmachine as Row;
  }
  const vmNamed = async (account: Account, name: string) =>
    ((await cs(account, "listVirtualMachines", { name })).json.virtualmachine as Row[])[0] as Row;
  const groupNames = (vm: Row) => ((vm.affinitygroup as Row[]) ?? []).map((g) => g.name);

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "affkeys");
    const catalogRole = await catalogReaderRole(client, `aff-catalog-${suffix}`);
    const account = (name: string) =>
      makeAccount(client, { keysNamespace, name, suffix, clusterRoles: [catalogRole] });
    alice = await account("aff-alice");
    bob = await account("aff-bob");
    workDir = await mkdtemp(join(tmpdir(), "stratus-aff-"));
    const { url, checksum } = await serveTinyImage();
    const uidOf = (type: ResourceType, name: string, spec: object) => createdUid(client, type, name, spec);
    ids.zone = await uidOf(Resources.zones, ZONE, {});
    ids.small = await uidOf(Resources.serviceOfferings, `aff-small-${suffix}`, { cpu: 1, memory: "128Mi" });
    ids.template = await uidOf(Resources.templates, `aff-tiny-${suffix}`, { source: { url }, checksum });
    ids.disk = await uidOf(Resources.diskOfferings, `aff-disk-${suffix}`, { size: "2Gi" });
    ids.custom = await uidOf(Resources.diskOfferings, `aff-custom-${suffix}`, {});
    const cloud = await startCloudStackCloud({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      prefix: `aff-${suffix}`,
      zone: ZONE,
      hosts: HOSTS,
      keysNamespace,
      workDir,
    });
    processes.push(...cloud.processes);
    endpoint = cloud.endpoint;
    for (const [who, gateway] of [
      [alice, "10.71.0.1"],
      [bob, "10.72.0.1"],
    ] as const) {
      const network = await cs(who, "createNetwork", {
        name: "main",
        displaytext: "main",
        networkofferingid: NETWORK_OFFERING,
        zoneid: ids.zone,
        gateway,
        netmask: "255.255.255.0",
      });
      expect(network.stderr).toBe("");
    }
  });

  logsOnFailure(() => processes);

  afterAll(async () => {
    for (const p of processes) await p.stop("SIGKILL");
    await client?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("lists the two affinity group types and creates groups of each, refusing what CloudStack refuses", async () => {
    const types = (await cs(alice, "listAffinityGroupTypes")).json;
    expect(types).toEqual({
      count: 2,
      affinitygrouptype: [{ type: "host anti-affinity" }, { type: "host affinity" }],
    });
    const spread = await cs(alice, "createAffinityGroup", {
      name: "spread",
      type: "host anti-affinity",
      description: "web servers apart",
    });
    expect(spread.stderr).toBe("");
    expect(spread.json.affinitygroup).toMatchObject({
      name: "spread",
      type: "host anti-affinity",
      description: "web servers apart",
      account: alice.namespace,
    });
    ids.spread = (spread.json.affinitygroup as Row).id as string;
    const together = await cs(alice, "createAffinityGroup", { name: "together", type: "host affinity" });
    ids.together = (together.json.affinitygroup as Row).id as string;

    const create = (args: Record<string, string>) =>
      refusal(alice, { command: "createAffinityGroup", ...args });
    expect(await create({ name: "odd", type: "host sideways" })).toMatchObject({
      status: 431,
      errortext:
        "Unable to create affinity group, invalid affinity group type: host sideways. Valid values are host anti-affinity,host affinity",
    });
    expect(await create({ name: "spread", type: "host affinity" })).toMatchObject({
      status: 431,
      errortext: "Unable to create affinity group, a group with name spread already exists.",
    });
    expect(await create({ type: "host affinity" })).toMatchObject({
      status: 431,
      errortext: expect.stringMatching(/due to missing parameter name/),
    });
    expect(await create({ name: "Web Servers", type: "host affinity" })).toMatchObject({ status: 431 });
    expect(await create({ name: "elsewhere", type: "host affinity", account: bob.namespace })).toMatchObject({
      status: 431,
      errortext: expect.stringMatching(/affinity groups are made in the caller's account/),
    });
  });

  it("puts the VMs of an anti-affinity group deployed at once on different hosts, and fails a third with 533", async () => {
    const [first, second] = await Promise.all([
      deploy(alice, "web-1", { affinitygroupnames: "spread" }),
      deploy(alice, "web-2", { affinitygroupids: ids.spread }),
    ]);
    expect(new Set([first?.hostname, second?.hostname])).toEqual(new Set(HOSTS));
    expect(groupNames(first as Row)).toEqual(["spread"]);
    const third = await jobOf(alice, deployParams("web-3", { affinitygroupnames: "spread" }));
    expect(third).toMatchObject({ jobstatus: 2, jobresultcode: 533 });
    expect(String((third.jobresult as Row).errortext)).toMatch(/0\/2 hosts: 2 anti-affinity/);
    const failed = (await vmNamed(alice, "web-3")).id as string;
    expect((await cs(alice, "destroyVirtualMachine", { id: failed, expunge: "true" })).stderr).toBe("");
  });

  it("puts the VMs of a host affinity group deployed at once on one host", async () => {
    const [first, second] = await Promise.all([
      deploy(alice, "db-1", { affinitygroupnames: "together" }),
      deploy(alice, "db-2", { affinitygroupnames: "together" }),
    ]);
    expect(HOSTS).toContain(first?.hostname);
    expect(second?.hostname).toBe(first?.hostname);
  });

  it("lists groups with their VMs, filtered by id, name, type, VM and keyword, and paged", async () => {
    const web1 = (await vmNamed(alice, "web-1")).id as string;
    const web2 = (await vmNamed(alice, "web-2")).id as string;
    const listed = (await cs(alice, "listAffinityGroups", { name: "spread" })).json;
    expect(listed).toMatchObject({
      count: 1,
      affinitygroup: [{ id: ids.spread, type: "host anti-affinity" }],
    });
    const members = ((listed.affinitygroup as Row[])[0] as Row).virtualmachineIds as string[];
    expect([...members].sort()).toEqual([web1, web2].sort());
    const names = async (args: Record<string, string>) =>
      (((await cs(alice, "listAffinityGroups", args)).json.affinitygroup as Row[]) ?? []).map((g) => g.name);
    expect(await names({ id: ids.together })).toEqual(["together"]);
    expect(await names({ type: "host affinity" })).toEqual(["together"]);
    expect(await names({ virtualmachineid: web1 })).toEqual(["spread"]);
    expect(await names({ keyword: "toge" })).toEqual(["together"]);
    const listedVms = (await cs(alice, "listVirtualMachines", { affinitygroupid: ids.spread })).json;
    expect(((listedVms.virtualmachine as Row[]) ?? []).map((v) => v.name).sort()).toEqual(["web-1", "web-2"]);
    const second = (await cs(alice, "listAffinityGroups", { page: "2", pagesize: "1" })).json;
    expect(second).toMatchObject({ count: 2, affinitygroup: [{ name: "together" }] });
  });

  it("changes a VM's groups only while it is stopped, and refuses groups its kept host breaks", async () => {
    const db = (await vmNamed(alice, "db-1")).hostname;
    const webs = [await vmNamed(alice, "web-1"), await vmNamed(alice, "web-2")];
    // web-1 and web-2 are on different hosts: one beside the db group, one away from it.
    const away = webs.find((w) => w.hostname !== db) as Row;
    const beside = webs.find((w) => w.hostname === db) as Row;
    const update = (vm: Row, args: Record<string, string>) =>
      refusal(alice, { command: "updateVMAffinityGroup", id: vm.id as string, ...args });
    expect(await update(away, { affinitygroupids: ids.together })).toMatchObject({
      status: 431,
      errortext: expect.stringMatching(/in state Running; make sure the virtual machine is stopped/),
    });
    for (const vm of [away, beside])
      expect((await cs(alice, "stopVirtualMachine", { id: vm.id as string })).stderr).toBe("");
    // A stopped VM keeps its host: joining a group whose VMs run elsewhere is refused, not ignored.
    expect(await update(away, { affinitygroupids: ids.together })).toMatchObject({
      status: 431,
      errortext: expect.stringMatching(
        new RegExp(`stays on host ${away.hostname} while stopped.*not the host of its affinity group`),
      ),
    });
    expect(
      await update(beside, { affinitygroupids: ids.spread, affinitygroupnames: "together" }),
    ).toMatchObject({
      status: 431,
      errortext: expect.stringMatching(/not both/),
    });
    expect(await update(beside, { affinitygroupnames: "nowhere" })).toMatchObject({
      status: 431,
      errortext: "Unable to find affinity group nowhere",
    });
    const updated = await cs(alice, "updateVMAffinityGroup", {
      id: beside.id as string,
      affinitygroupnames: "together",
    });
    expect(updated.stderr).toBe("");
    expect(groupNames(updated.json.virtualmachine as Row)).toEqual(["together"]);
    const started = await cs(alice, "startVirtualMachine", { id: beside.id as string });
    expect(started.stderr).toBe("");
    expect((started.json.virtualmachine as Row).hostname).toBe(db);
    expect(groupNames(await vmNamed(alice, away.name as string))).toEqual(["spread"]);
  });

  it("answers another account's group as an unknown id (431), and lists none of it", async () => {
    const unknown = (parameter: string, id: string) =>
      `Invalid parameter ${parameter} value=${id} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.`;
    expect(await refusal(bob, { command: "deleteAffinityGroup", id: ids.spread })).toMatchObject({
      status: 431,
      errortext: unknown("id", ids.spread),
    });
    expect(await refusal(bob, deployParams("intruder", { affinitygroupids: ids.together }))).toMatchObject({
      status: 431,
      errortext: unknown("affinitygroupids", ids.together),
    });
    expect(await refusal(bob, { command: "deleteAffinityGroup", name: "spread" })).toMatchObject({
      status: 431,
      errortext: "Unable to find affinity group spread",
    });
    expect((await cs(bob, "listAffinityGroups", { id: ids.spread })).json).toEqual({});
    expect((await cs(bob, "listAffinityGroups")).json).toEqual({});
    await expect(client.get(Resources.virtualMachines, "intruder", bob.namespace)).rejects.toThrow();
  });

  it("deletes a group with its memberships, by name or id, and refuses a delete that names neither", async () => {
    expect(await refusal(alice, { command: "deleteAffinityGroup" })).toMatchObject({
      status: 431,
      errortext: "Either the affinity group Id or group name must be specified to delete the group",
    });
    // Naming another account is refused, not read as the caller's own group of that name.
    expect(
      await refusal(alice, { command: "deleteAffinityGroup", name: "spread", account: bob.namespace }),
    ).toMatchObject({ status: 431 });
    expect((await cs(alice, "deleteAffinityGroup", { name: "spread" })).json).toEqual({ success: true });
    for (const name of ["web-1", "web-2"])
      expect(groupNames(await vmNamed(alice, name))).not.toContain("spread");
    const web = await client.get<KubeObject & { spec: { placement?: { affinityGroups?: string[] } } }>(
      Resources.virtualMachines,
      "web-1",
      alice.namespace,
    );
    expect(web.spec.placement?.affinityGroups).not.toContain("spread");
    expect((await cs(alice, "deleteAffinityGroup", { id: ids.together })).json).toEqual({ success: true });
    expect(groupNames(await vmNamed(alice, "db-1"))).toEqual([]);
    expect((await cs(alice, "listAffinityGroups")).json).toEqual({});
    const kept = await client.get<KubeObject & { spec: { placement?: object } }>(
      Resources.virtualMachines,
      "db-2",
      alice.namespace,
    );
    expect(kept.spec.placement).toEqual({ affinityGroups: [] });
  });

  it("makes and attaches a data disk from deploy's diskofferingid, listed with its offering", async () => {
    const vm = await deploy(bob, "with-disk", { diskofferingid: ids.disk });
    const volumes = (await cs(bob, "listVolumes", { virtualmachineid: vm.id as string, type: "DATADISK" }))
      .json;
    expect(volumes).toMatchObject({
      count: 1,
      volume: [
        {
          type: "DATADISK",
          diskofferingid: ids.disk,
          diskofferingname: `aff-disk-${suffix}`,
          virtualmachineid: vm.id,
          deviceid: 1,
          size: 2 * 1024 ** 3,
        },
      ],
    });
    const root = (await cs(bob, "listVolumes", { virtualmachineid: vm.id as string, type: "ROOT" })).json;
    expect(root).toMatchObject({
      count: 1,
      volume: [
        {
          type: "ROOT",
          deviceid: 0,
          serviceofferingid: ids.small,
          serviceofferingname: `aff-small-${suffix}`,
        },
      ],
    });
    expect(await refusal(bob, deployParams("no-size", { diskofferingid: ids.custom }))).toMatchObject({
      status: 431,
      errortext: expect.stringMatching(/customized: .*needs the data disk's size/),
    });
  });

  it("answers 5,000 fuzzed affinity requests with CloudStack's own codes, never a 5xx of its own", async () => {
    const withDisk = (await vmNamed(bob, "with-disk")).id as string;
    const values = [
      "",
      "x",
      "-1",
      "Web Servers",
      "host affinity",
      "host anti-affinity",
      "%00",
      "a".repeat(300),
      "true",
      "0",
      randomBytes(16)
        .toString("hex")
        .replace(/^(.{8})(.{4})(.{4})(.{4})/, "$1-$2-$3-$4-"),
      ids.spread,
      ids.together,
      withDisk,
      `${ids.together},${withDisk}`,
    ];
    const commands = [
      "createAffinityGroup",
      "listAffinityGroups",
      "deleteAffinityGroup",
      "updateVMAffinityGroup",
      "listAffinityGroupTypes",
    ];
    const parameters = [
      "id",
      "name",
      "type",
      "description",
      "virtualmachineid",
      "affinitygroupids",
      "affinitygroupnames",
      "keyword",
      "page",
      "pagesize",
      "account",
    ];
    const seen = await fuzzRequests({
      endpoint,
      account: bob,
      commands,
      parameters,
      values,
      allowed: new Set([200, 430, 431, 432, 531, 533, 536]),
    });
    expect(seen.get(200)).toBeGreaterThan(0);
    expect(seen.get(431)).toBeGreaterThan(0);
  });
});

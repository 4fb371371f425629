// CloudStack behaviour real clients depend on (issue 16), through the real `cs` client and the
// signed HTTP API against the real API component, operator and a simulated host agent: a deploy
// no host fits fails its job with 533 and leaves the VM in Error; deleteNetwork of a network in
// use fails at once; a data volume reads back with its disk offering and device id; a deploy
// without networkids gets the account's network (made for it when it has none).
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import {
  type Account,
  catalogReaderRole,
  hasCs,
  makeAccount,
  cs as runCs,
  signedRequest,
  jobOf as submitAndWait,
} from "./cloudstack-accounts.ts";
import { logsOnFailure, type StratusProcess, startCloudStackCloud } from "./processes.ts";
import { serveTinyGuest, serveTinyImage, sharedControlPlane, useNamespace } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `csb-zone-${suffix}`;
const NETWORK_OFFERING = "5ce0b2e4-6d1c-4f2b-9a57-2a0f3d8b1c01";
type Row = Record<string, unknown>;

describe.skipIf(!hasCs)("CloudStack behaviour real clients depend on (needs python3-cs)", () => {
  let client: KubeClient;
  let endpoint: string;
  let workDir: string;
  const processes: StratusProcess[] = [];
  let alice: Account;
  let bob: Account;
  const ids = { zone: "", small: "", huge: "", template: "", kernel: "", disk: "" };

  const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
    runCs(endpoint, account, command, args);
  /** An async command submitted by hand, polled to its end: the job's body. */
  async function jobOf(account: Account, params: Record<string, string>): Promise<Row> {
    const { status, body, job } = await submitAndWait(endpoint, account, params);
    expect(status, JSON.stringify(body)).toBe(200);
    return job as Row;
  }
  const deploy = (account: Account, extra: Record<string, string>) =>
    cs(account, "deployVirtualMachine", {
      serviceofferingid: ids.small,
      templateid: ids.template,
      zoneid: ids.zone,
      ...extra,
    });
  const createNetwork = async (account: Account, name: string, gateway: string) => {
    const created = await cs(account, "createNetwork", {
      name,
      displaytext: name,
      networkofferingid: NETWORK_OFFERING,
      zoneid: ids.zone,
      gateway,
      netmask: "255.255.255.0",
    });
    expect(created.stderr).toBe("");
    return (created.json.network as Row).id as string;
  };

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "keys");
    const catalogRole = await catalogReaderRole(client, `csb-catalog-${suffix}`);
    const account = (name: string) =>
      makeAccount(client, { keysNamespace, name, suffix, clusterRoles: [catalogRole] });
    alice = await account("alice");
    bob = await account("bob");
    workDir = await mkdtemp(join(tmpdir(), "stratus-csb-"));
    const { url, checksum } = await serveTinyImage();
    const uidOf = async (created: Promise<KubeObject>) => (await created).metadata.uid as string;
    ids.zone = await uidOf(
      client.create<KubeObject & { spec: object }>(Resources.zones, { metadata: { name: ZONE }, spec: {} }),
    );
    ids.small = await uidOf(
      client.create<KubeObject & { spec: object }>(Resources.serviceOfferings, {
        metadata: { name: `csb-small-${suffix}` },
        spec: { cpu: 1, memory: "128Mi" },
      }),
    );
    ids.huge = await uidOf(
      client.create<KubeObject & { spec: object }>(Resources.serviceOfferings, {
        metadata: { name: `csb-huge-${suffix}` },
        spec: { cpu: 256, memory: "128Mi" },
      }),
    );
    ids.template = await uidOf(
      client.create<KubeObject & { spec: object }>(Resources.templates, {
        metadata: { name: `csb-tiny-${suffix}` },
        spec: { source: { url }, checksum },
      }),
    );
    // A direct-boot template: no ROOT disk, so its VM's first data disk is the guest's vda.
    ids.kernel = await uidOf(
      client.create<KubeObject & { spec: object }>(Resources.templates, {
        metadata: { name: `csb-kernel-${suffix}` },
        spec: { source: await serveTinyGuest() },
      }),
    );
    ids.disk = await uidOf(
      client.create<KubeObject & { spec: object }>(Resources.diskOfferings, {
        metadata: { name: `csb-disk-${suffix}` },
        spec: { displayName: "one gig", size: "1Gi" },
      }),
    );
    const cloud = await startCloudStackCloud({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      prefix: `csb-${suffix}`,
      zone: ZONE,
      hosts: [`csb-h1-${suffix}`],
      keysNamespace,
      workDir,
    });
    processes.push(...cloud.processes);
    endpoint = cloud.endpoint;
  });

  logsOnFailure(() => processes);

  afterAll(async () => {
    for (const p of processes) await p.stop("SIGKILL");
    await client?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("fails a deploy no host fits with 533 and leaves the VM in Error, not placed later", async () => {
    const network = await createNetwork(alice, "nofit", "10.61.0.1");
    const job = await jobOf(alice, {
      command: "deployVirtualMachine",
      serviceofferingid: ids.huge,
      templateid: ids.template,
      zoneid: ids.zone,
      name: "too-big",
      networkids: network,
    });
    expect(job).toMatchObject({
      jobstatus: 2,
      jobresultcode: 533,
      jobresult: { errorcode: 533, cserrorcode: 4325 },
    });
    expect(String((job.jobresult as Row).errortext)).toMatch(/Unable to create a deployment for VM too-big/);
    const listed = (await cs(alice, "listVirtualMachines", { name: "too-big" })).json;
    expect(listed).toMatchObject({ count: 1, virtualmachine: [{ name: "too-big", state: "Error" }] });
    // Halted: the compute controller does not try it again behind the client's back.
    const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "too-big", alice.namespace);
    expect(vm.spec.runStrategy).toBe("Halted");
    // The user destroys it, as in CloudStack, and the network can go.
    const id = (listed.virtualmachine as Row[])[0]?.id as string;
    expect((await cs(alice, "destroyVirtualMachine", { id, expunge: "true" })).stderr).toBe("");
    expect((await cs(alice, "deleteNetwork", { id: network })).json).toEqual({ success: true });
  });

  it("fails deleteNetwork of a network a VM uses at once, and keeps the network", async () => {
    const network = await createNetwork(alice, "busy", "10.62.0.1");
    const deployed = await deploy(alice, { name: "busy-1", networkids: network });
    expect(deployed.stderr).toBe("");
    const job = await jobOf(alice, { command: "deleteNetwork", id: network });
    expect(job).toMatchObject({
      jobstatus: 2,
      jobresultcode: 530,
      jobresult: { errorcode: 530, cserrorcode: 9999, errortext: "Failed to delete network" },
    });
    const listed = (await cs(alice, "listNetworks", { id: network })).json;
    expect(listed).toMatchObject({ count: 1, network: [{ id: network, name: "busy" }] });
    const kept = await client.get<KubeObject>(Resources.networks, "busy", alice.namespace);
    expect(kept.metadata.deletionTimestamp).toBeUndefined();
    const vm = (deployed.json.virtualmachine as Row).id as string;
    expect((await cs(alice, "destroyVirtualMachine", { id: vm, expunge: "true" })).stderr).toBe("");
    expect((await cs(alice, "deleteNetwork", { id: network })).json).toEqual({ success: true });
  });

  it.each([
    ["a template with a ROOT disk", "template"],
    ["a direct-boot template (no ROOT disk)", "kernel"],
  ] as const)(
    "reads a data volume back as it was made: its disk offering, and device id 1 once attached to a VM of %s",
    async (_, template) => {
      const name = `disks-${template}`;
      const network = await createNetwork(alice, name, template === "kernel" ? "10.64.0.1" : "10.63.0.1");
      const deployed = await deploy(alice, { name, networkids: network, templateid: ids[template] });
      expect(deployed.stderr).toBe("");
      const vm = (deployed.json.virtualmachine as Row).id as string;
      const created = await cs(alice, "createVolume", {
        name: `${name}-data`,
        diskofferingid: ids.disk,
        zoneid: ids.zone,
      });
      expect(created.stderr).toBe("");
      const id = (created.json.volume as Row).id as string;
      const offering = { diskofferingid: ids.disk, diskofferingname: `csb-disk-${suffix}` };
      expect(created.json.volume).toMatchObject(offering);
      expect((await cs(alice, "listVolumes", { id })).json).toMatchObject({ count: 1, volume: [offering] });
      // The simulated hypervisor has no hot plug: the disk goes on while the VM is stopped.
      expect((await cs(alice, "stopVirtualMachine", { id: vm })).stderr).toBe("");
      const attached = await cs(alice, "attachVolume", { id, virtualmachineid: vm });
      expect(attached.stderr).toBe("");
      expect(attached.json.volume).toMatchObject({ ...offering, virtualmachineid: vm, deviceid: 1 });
      expect((await cs(alice, "startVirtualMachine", { id: vm })).stderr).toBe("");
      expect((await cs(alice, "listVolumes", { id })).json).toMatchObject({
        count: 1,
        volume: [{ ...offering, virtualmachineid: vm, deviceid: 1 }],
      });
    },
  );

  it("deploys without networkids onto the account's network, made for it when it has none, and asks when it has several", async () => {
    const refused = async (name: string) => {
      const response = await signedRequest(endpoint, bob, {
        command: "deployVirtualMachine",
        serviceofferingid: ids.small,
        templateid: ids.template,
        zoneid: ids.zone,
        name,
      });
      return { status: response.status, body: response.body.deployvirtualmachineresponse as Row };
    };
    // Two deploys at once into an account with no network: one network is made, and both use it.
    const deployed = await Promise.all([deploy(bob, { name: "lonely" }), deploy(bob, { name: "defaulted" })]);
    for (const one of deployed) expect(one.stderr, one.stdout).toBe("");
    const listed = (await cs(bob, "listNetworks")).json;
    expect(listed).toMatchObject({
      count: 1,
      network: [{ name: "default", displaytext: `${bob.namespace}-network`, cidr: "10.1.1.0/24" }],
    });
    const network = ((listed.network as Row[])[0] as Row).id;
    for (const one of deployed)
      expect((one.json.virtualmachine as Row).nic).toEqual([
        expect.objectContaining({ networkid: network, networkname: "default", isdefault: true }),
      ]);
    await createNetwork(bob, "second", "10.66.0.1");
    expect(await refused("undecided")).toMatchObject({
      status: 431,
      body: {
        errortext: expect.stringMatching(/More than 1 default Isolated networks .*please specify networkIds/),
      },
    });
  });
});

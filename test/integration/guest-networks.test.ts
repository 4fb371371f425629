// Tenants' networks stay inside what the administrator gave the zone, as a tenant would attack
// them: a CIDR outside the zone's guest ranges, one overlapping another tenant's network, one over
// an address of the host itself, and a VLAN of the tenant's choosing, each through kubectl and
// through the CloudStack API. VLANs come from the zone's range, distinct under concurrency (two
// network controllers at once), and a network's VLAN is released with it.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GuestVlan, type Network, Resources, type VirtualMachine, type Zone } from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import { type Account, adminAndUser, makeAccount, signedRequest } from "./cloudstack-accounts.ts";
import {
  logsOnFailure,
  type StratusProcess,
  startApiServer,
  startHostAgent,
  startOperator,
} from "./processes.ts";
import {
  kubectl,
  serveTinyImage,
  sharedControlPlane,
  useNamespace,
  waitFor,
  waitUntilGone,
} from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `gn-zone-${suffix}`;
const VLAN_ZONE = `gn-vlans-${suffix}`;
const HOST = `gn-host-${suffix}`;

const ready = (n: Network | undefined) => n?.status?.conditions?.find((c) => c.type === "Ready");

describe("tenant networks inside the zone's guest ranges and VLANs", () => {
  let admin: KubeClient;
  let kubeconfigPath: string;
  let keysNamespace: string;
  let workDir: string;
  let endpoint: string;
  let tenant: Account;
  let other: Account;
  let cloudAdmin: Account;
  const processes: StratusProcess[] = [];
  logsOnFailure(() => processes);

  const asTenant = (account: Account) => admin.impersonating(account.user);
  const network = (namespace: string, name: string, spec: Partial<Network["spec"]>) =>
    ({
      apiVersion: "stratus.io/v1alpha1",
      kind: "Network",
      metadata: { name, namespace },
      spec: { zone: ZONE, ...spec },
    }) as Network;
  const readyOf = (namespace: string, name: string, description: string, accept: (n: Network) => boolean) =>
    waitFor(description, async () => {
      const n = await admin.get<Network>(Resources.networks, name, namespace);
      return ready(n) && accept(n) ? n : undefined;
    });
  const api = (account: Account, params: Record<string, string>) =>
    signedRequest(endpoint, account, {
      command: "createNetwork",
      networkofferingid: "x",
      zoneid: "",
      ...params,
    });
  let zoneId: string;

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    kubeconfigPath = controlPlane.kubeconfigPath;
    admin = new KubeClient(controlPlane.kubeConfig);
    keysNamespace = await useNamespace(controlPlane.kubeConfig, "gn-keys");
    const accounts = await adminAndUser(admin, { keysNamespace, suffix, prefix: "gn" });
    tenant = accounts.user;
    cloudAdmin = accounts.admin;
    other = await makeAccount(admin, {
      keysNamespace,
      name: "gn-other",
      suffix,
      clusterRoles: [`stratus-catalog-reader-${suffix}`],
    });
    // 127.0.0.0/8 is the administrator's mistake the host agent still catches (the host's loopback).
    const zone = await admin.create(Resources.zones, {
      metadata: { name: ZONE },
      spec: { guestCidrs: ["10.210.0.0/16", "127.0.0.0/8"], vlanRange: "500-599" },
    });
    zoneId = (zone as Zone).metadata.uid as string;
    await admin.create(Resources.zones, { metadata: { name: VLAN_ZONE }, spec: { vlanRange: "300-319" } });
    await admin.create(Resources.serviceOfferings, {
      metadata: { name: `gn-small-${suffix}` },
      spec: { cpu: 1, memory: "128Mi" },
    });
    const { url, checksum } = await serveTinyImage();
    await admin.create(Resources.templates, {
      metadata: { name: `gn-tiny-${suffix}` },
      spec: { source: { url }, checksum },
    });
    workDir = await mkdtemp(join(tmpdir(), "stratus-gn-"));
    processes.push(
      await startOperator({
        kubeconfigPath,
        identity: `gn-operator-${suffix}`,
        args: [`--lease-namespace=${keysNamespace}`],
      }),
      // A second network controller at once, without leader election: the allocations must not collide.
      await startOperator({
        kubeconfigPath,
        identity: `gn-network-2-${suffix}`,
        args: ["--components=network", "--leader-elect=false", `--lease-namespace=${keysNamespace}`],
      }),
      await startHostAgent({
        kubeconfigPath,
        hostName: HOST,
        zone: ZONE,
        leaseNamespace: keysNamespace,
        workDir,
      }),
    );
    const apiServer = await startApiServer({
      kubeconfigPath,
      client: admin,
      identity: `gn-api-${suffix}`,
      keysNamespace,
    });
    processes.push(apiServer.process);
    endpoint = apiServer.endpoint;
  });

  afterAll(async () => {
    for (const p of processes) await p.stop("SIGKILL");
    await admin?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("refuses a CIDR outside the zone's guest ranges: kubectl gets a Ready=False condition, the API a 431", async () => {
    await asTenant(tenant).create(
      Resources.networks,
      network(tenant.namespace, "lan", { cidr: "192.168.10.0/29", gateway: "192.168.10.5" }),
    );
    const refused = await readyOf(
      tenant.namespace,
      "lan",
      "the network refused",
      (n) => ready(n)?.status === "False",
    );
    expect(ready(refused)).toMatchObject({
      reason: "CidrNotAllowed",
      message: `cidr 192.168.10.0/29 is outside zone ${ZONE}'s guest ranges (10.210.0.0/16, 127.0.0.0/8)`,
    });
    expect(refused.status?.vlan).toBeUndefined();
    const viaApi = await api(tenant, {
      name: "lan2",
      zoneid: zoneId,
      gateway: "192.168.10.5",
      netmask: "255.255.255.248",
    });
    expect(viaApi.status).toBe(431);
    expect(String(viaApi.body.createnetworkresponse?.errortext)).toContain("is outside zone");
  });

  it("refuses a network overlapping another tenant's, which keeps its range", async () => {
    await asTenant(other).create(
      Resources.networks,
      network(other.namespace, "first", { cidr: "10.210.1.0/24" }),
    );
    const first = await readyOf(
      other.namespace,
      "first",
      "the first network",
      (n) => ready(n)?.status === "True",
    );
    expect(first.status?.vlan).toBeGreaterThanOrEqual(500);
    await asTenant(tenant).create(
      Resources.networks,
      network(tenant.namespace, "squat", { cidr: "10.210.1.128/25" }),
    );
    const squat = await readyOf(
      tenant.namespace,
      "squat",
      "the overlapping network refused",
      (n) => ready(n)?.status === "False",
    );
    expect(ready(squat)).toMatchObject({
      reason: "CidrOverlaps",
      message: `cidr 10.210.1.128/25 overlaps another network of zone ${ZONE}`,
    });
    expect(ready(await admin.get<Network>(Resources.networks, "first", other.namespace))?.status).toBe(
      "True",
    );
    // A VM on the refused network gets no address, so nothing implements it.
    await asTenant(tenant).create(Resources.virtualMachines, {
      metadata: { name: "squatter", namespace: tenant.namespace },
      spec: {
        zone: ZONE,
        serviceOffering: `gn-small-${suffix}`,
        template: `gn-tiny-${suffix}`,
        nics: [{ name: "eth0", network: "squat" }],
      },
    });
    const vm = await waitFor("the VM to wait for its network", async () => {
      const v = await admin.get<VirtualMachine>(Resources.virtualMachines, "squatter", tenant.namespace);
      return v.status?.conditions?.find((c) => c.type === "NetworksReady" && c.status === "False")
        ? v
        : undefined;
    });
    expect(vm.status?.host).toBeUndefined();
    expect(vm.status?.conditions?.find((c) => c.type === "NetworksReady")?.message).toContain(
      "overlaps another network",
    );
    const viaApi = await api(tenant, {
      name: "squat2",
      zoneid: zoneId,
      gateway: "10.210.1.1",
      netmask: "255.255.0.0",
    });
    expect(viaApi.status).toBe(431);
    expect(String(viaApi.body.createnetworkresponse?.errortext)).toContain("overlaps another network");
  });

  it("does not configure a network over an address of the host itself, and says so in the VM", async () => {
    await asTenant(tenant).create(
      Resources.networks,
      network(tenant.namespace, "loop", { cidr: "127.0.0.0/24" }),
    );
    await readyOf(
      tenant.namespace,
      "loop",
      "the network allowed by the zone",
      (n) => ready(n)?.status === "True",
    );
    await asTenant(tenant).create(Resources.virtualMachines, {
      metadata: { name: "looper", namespace: tenant.namespace },
      spec: {
        zone: ZONE,
        serviceOffering: `gn-small-${suffix}`,
        template: `gn-tiny-${suffix}`,
        nics: [{ name: "eth0", network: "loop" }],
      },
    });
    const vm = await waitFor(
      "the agent to refuse the network",
      async () => {
        const v = await admin.get<VirtualMachine>(Resources.virtualMachines, "looper", tenant.namespace);
        return v.status?.conditions?.find((c) => c.type === "Ready" && c.reason === "NetworkOverlapsHost")
          ? v
          : undefined;
      },
      { timeoutMs: 60_000 },
    );
    expect(vm.status?.conditions?.find((c) => c.type === "Ready")?.message).toMatch(
      /^Network .*\/loop \(127\.0\.0\.0\/24\) overlaps the host's address 127\.0\.0\.1\/8 on lo; the agent does not configure it\.$/,
    );
    // libvirt never saw it: the agent's networks hold no such gateway.
    const debug = await processes[2]?.get("/debug/networks");
    expect(debug?.status).toBe(200);
    expect(debug?.body).not.toContain('"ip":"127.0.0.');
  });

  it("refuses a VLAN chosen by a tenant through kubectl and the CloudStack API; an administrator's is kept unique", async () => {
    const manifest = JSON.stringify(
      network(tenant.namespace, "joiner", { cidr: "10.210.9.0/24", vlan: 501 }),
    );
    const byKubectl = await kubectl(kubeconfigPath, ["--as", tenant.user, "create", "-f", "-"], manifest);
    expect(byKubectl.code).not.toBe(0);
    expect(byKubectl.stderr).toContain("only administrators may set spec.vlan or spec.vni");
    const vni = await asTenant(tenant)
      .create(Resources.networks, network(tenant.namespace, "joiner", { cidr: "10.210.9.0/24", vni: 501 }))
      .then(
        () => "created",
        (error: Error) => error.message,
      );
    expect(vni).toContain("only administrators may set spec.vlan or spec.vni");
    const viaApi = await api(tenant, {
      name: "joiner",
      zoneid: zoneId,
      gateway: "10.210.9.1",
      netmask: "255.255.255.0",
      vlan: "501",
    });
    expect(viaApi.status).toBe(431);
    expect(viaApi.body.createnetworkresponse?.errortext).toBe(
      "Only ROOT admin is allowed to specify vlanId or bypass vlan overlap check",
    );

    // The administrator may: the VLAN is held for that network, and nobody else gets it.
    const byAdmin = await api(cloudAdmin, {
      name: "infra",
      zoneid: zoneId,
      gateway: "10.210.20.1",
      netmask: "255.255.255.0",
      vlan: "42",
    });
    expect(byAdmin.status).toBe(200);
    const infra = await readyOf(
      cloudAdmin.namespace,
      "infra",
      "the administrator's network",
      (n) => ready(n)?.status === "True",
    );
    expect(infra.status?.vlan).toBe(42);
    await admin.create(
      Resources.networks,
      network(tenant.namespace, "twin", { cidr: "10.210.21.0/24", vlan: 42 }),
    );
    const twin = await readyOf(
      tenant.namespace,
      "twin",
      "the duplicate VLAN refused",
      (n) => ready(n)?.status === "False",
    );
    expect(ready(twin)).toMatchObject({
      reason: "VlanInUse",
      message: `VLAN 42 is already held by another network of zone ${ZONE}.`,
    });
  });

  it("gives 20 networks created at once 20 distinct VLANs of the range, says when it is exhausted, and releases a deleted network's", async () => {
    const names = Array.from({ length: 20 }, (_, i) => `seg-${i}`);
    await Promise.all(
      names.map((name) =>
        asTenant(tenant).create(Resources.networks, {
          ...network(tenant.namespace, name, { type: "L2" }),
          spec: { zone: VLAN_ZONE, type: "L2" },
        } as Network),
      ),
    );
    const vlans = await waitFor(
      "every network's VLAN",
      async () => {
        const all = await Promise.all(
          names.map((name) => admin.get<Network>(Resources.networks, name, tenant.namespace)),
        );
        if (!all.every((n) => ready(n)?.status === "True")) return undefined;
        // Two controllers that raced agree within a few reconciles: wait until each network's
        // VLAN is the one its GuestVlan holds, and no GuestVlan is left over.
        const held = (await admin.list<GuestVlan>(Resources.guestVlans)).items
          .filter((v) => v.spec.zone === VLAN_ZONE)
          .map((v) => `${v.spec.network.name}=${v.spec.vlan}`)
          .sort();
        const stated = all.map((n) => `${n.metadata.name}=${n.status?.vlan}`).sort();
        return held.join() === stated.join() ? all.map((n) => n.status?.vlan as number) : undefined;
      },
      { timeoutMs: 60_000 },
    );
    expect(new Set(vlans).size).toBe(20);
    expect([...vlans].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => 300 + i));

    await asTenant(tenant).create(Resources.networks, {
      ...network(tenant.namespace, "seg-late", {}),
      spec: { zone: VLAN_ZONE, type: "L2" },
    } as Network);
    const late = await readyOf(
      tenant.namespace,
      "seg-late",
      "the exhausted range",
      (n) => ready(n)?.status === "False",
    );
    expect(ready(late)).toMatchObject({
      reason: "VlansExhausted",
      message: `Every VLAN of 300-319 is in use in zone ${VLAN_ZONE}.`,
    });

    const freed = (await admin.get<Network>(Resources.networks, "seg-7", tenant.namespace)).status?.vlan;
    await asTenant(tenant).delete(Resources.networks, "seg-7", tenant.namespace);
    await waitUntilGone(admin, Resources.networks, "seg-7", tenant.namespace);
    const got = await readyOf(
      tenant.namespace,
      "seg-late",
      "the released VLAN handed on",
      (n) => ready(n)?.status === "True",
    );
    expect(got.status?.vlan).toBe(freed);
  });
});

// Tenants' networks stay inside what the administrator gave the zone, as a tenant would attack
// them: a CIDR outside the zone's guest ranges, one overlapping another tenant's network, one over
// the cluster's own Service or pod range, one over an address of the host itself, and a VLAN of the
// tenant's choosing, each through kubectl and through the CloudStack API. VLANs come from the
// zone's range, distinct under concurrency (two network controllers at once), and a network's VLAN
// is released with it.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NODE, SERVICE_CIDR, type ServiceCIDR } from "../../crds/cluster-ranges.ts";
import { type GuestVlan, type Network, Resources, type VirtualMachine, type Zone } from "../../crds/index.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
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
/** Default guest ranges (10.0.0.0/8), which hold the control plane's Service range. */
const OPEN_ZONE = `gn-open-${suffix}`;
/** An administrator's guest range that holds the Service range: allocation must step over it. */
const AUTO_ZONE = `gn-auto-${suffix}`;
const HOST = `gn-host-${suffix}`;
const POD_NODE = `gn-pods-${suffix}`;

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
  /** The account's network once its Ready condition is `status`. */
  const readyIs = (account: Account, name: string, status: "True" | "False") =>
    readyOf(account.namespace, name, `${name} Ready=${status}`, (n) => ready(n)?.status === status);
  /** Creates a network as the account's user and waits until its Ready condition is `status`. */
  const createdAs = async (
    account: Account,
    name: string,
    spec: Partial<Network["spec"]>,
    status: "True" | "False",
  ) => {
    await asTenant(account).create(Resources.networks, network(account.namespace, name, spec));
    return readyIs(account, name, status);
  };
  const api = (account: Account, params: Record<string, string>) =>
    signedRequest(endpoint, account, {
      command: "createNetwork",
      networkofferingid: "x",
      zoneid: "",
      ...params,
    });
  /** What the API answers the tenant's createNetwork of gateway/netmask: a 431, and its text. */
  const refusedByApi = async (name: string, zoneid: string, gateway: string, netmask: string) => {
    const answer = await api(tenant, { name, zoneid, gateway, netmask });
    expect(answer.status).toBe(431);
    return String(answer.body.createnetworkresponse?.errortext);
  };
  let zoneId: string;
  let openZoneId: string;
  let autoZoneId: string;
  const uidOf = (zone: { metadata: object }) => (zone as Zone).metadata.uid as string;

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
    openZoneId = uidOf(await admin.create(Resources.zones, { metadata: { name: OPEN_ZONE }, spec: {} }));
    autoZoneId = uidOf(
      await admin.create(Resources.zones, {
        metadata: { name: AUTO_ZONE },
        spec: { guestCidrs: ["10.0.0.0/23"] },
      }),
    );
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
    await admin?.delete(NODE, POD_NODE).catch(() => undefined);
    await admin?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("refuses a CIDR outside the zone's guest ranges: kubectl gets a Ready=False condition, the API a 431", async () => {
    const refused = await createdAs(
      tenant,
      "lan",
      { cidr: "192.168.10.0/29", gateway: "192.168.10.5" },
      "False",
    );
    expect(ready(refused)).toMatchObject({
      reason: "CidrNotAllowed",
      message: `cidr 192.168.10.0/29 is outside zone ${ZONE}'s guest ranges (10.210.0.0/16, 127.0.0.0/8)`,
    });
    expect(refused.status?.vlan).toBeUndefined();
    expect(await refusedByApi("lan2", zoneId, "192.168.10.5", "255.255.255.248")).toContain(
      "is outside zone",
    );
  });

  it("refuses a network overlapping another tenant's, which keeps its range", async () => {
    const first = await createdAs(other, "first", { cidr: "10.210.1.0/24" }, "True");
    expect(first.status?.vlan).toBeGreaterThanOrEqual(500);
    const squat = await createdAs(tenant, "squat", { cidr: "10.210.1.128/25" }, "False");
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
    expect(await refusedByApi("squat2", zoneId, "10.210.1.1", "255.255.0.0")).toContain(
      "overlaps another network",
    );
  });

  it("refuses a network over the cluster's Service range, as read from its ServiceCIDRs, through kubectl and the API", async () => {
    // The control plane's own range (--service-cluster-ip-range), as the cluster states it.
    const serviceRanges = (await admin.list<ServiceCIDR>(SERVICE_CIDR)).items.flatMap(
      (s) => s.spec?.cidrs ?? [],
    );
    expect(serviceRanges).toContain("10.0.0.0/24");
    const shadow = await createdAs(tenant, "shadow", { zone: OPEN_ZONE, cidr: "10.0.0.0/24" }, "False");
    expect(ready(shadow)).toMatchObject({
      reason: "CidrReserved",
      message:
        "cidr 10.0.0.0/24 overlaps the cluster's Service range 10.0.0.0/24, which guest networks may not shadow",
    });
    expect(shadow.status?.vlan).toBeUndefined();
    expect(await refusedByApi("shadow2", openZoneId, "10.0.0.1", "255.255.255.0")).toBe(
      "cidr 10.0.0.0/24 overlaps the cluster's Service range 10.0.0.0/24, which guest networks may not shadow",
    );
  });

  it("refuses a network over a node's pod range, as soon as the node has it, and allocates around both", async () => {
    await createdAs(tenant, "early", { cidr: "10.210.200.0/24" }, "True");
    // A node whose pods get the network's range: the cluster's range wins, the network is refused.
    await admin.create(NODE, {
      metadata: { name: POD_NODE },
      spec: { podCIDR: "10.210.200.0/24" },
    } as KubeObject);
    const refused = await readyIs(tenant, "early", "False");
    expect(ready(refused)).toMatchObject({
      reason: "CidrReserved",
      message:
        "cidr 10.210.200.0/24 overlaps a node's pod range 10.210.200.0/24, which guest networks may not shadow",
    });
    expect(await refusedByApi("pods2", zoneId, "10.210.200.129", "255.255.255.128")).toContain(
      "overlaps a node's pod range",
    );

    // A network naming no CIDR gets a /24 clear of the cluster's ranges: the first of this zone's
    // is the Service range, and CloudStack's 10.1.1.0/24 is outside it.
    const auto = await api(tenant, { name: "auto", zoneid: autoZoneId });
    expect(auto.status).toBe(200);
    expect((await admin.get<Network>(Resources.networks, "auto", tenant.namespace)).spec.cidr).toBe(
      "10.0.1.0/24",
    );

    // The node gone, its range is free again.
    await admin.delete(NODE, POD_NODE);
    await readyIs(tenant, "early", "True");
  });

  it("does not configure a network over an address of the host itself, and says so in the VM", async () => {
    await createdAs(tenant, "loop", { cidr: "127.0.0.0/24" }, "True");
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
    // A VXLAN segment, even an administrator's, is refused until hosts join VXLANs (issue 17).
    await admin.create(
      Resources.networks,
      network(tenant.namespace, "overlay", { cidr: "10.210.22.0/24", vni: 5001 }),
    );
    const overlay = await readyOf(
      tenant.namespace,
      "overlay",
      "the VXLAN refused",
      (n) => ready(n)?.status === "False",
    );
    expect(ready(overlay)).toMatchObject({
      reason: "VxlanNotImplemented",
      message: expect.stringContaining("VMs on different hosts could not reach each other"),
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

// The orchestration components against the real control plane with five host agents on libvirt's
// test driver: placement by weight without overcommit, race-free IPAM, per-host reasons for a VM
// that fits nowhere, maintenance, host failure, and convergence while the operator is SIGKILLed.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allocatable } from "../../controllers/scheduler/placement.ts";
import { displayState } from "../../crds/display-state.ts";
import {
  type Host,
  type IPAddress,
  type Network,
  Resources,
  type VirtualMachine,
  type Volume,
} from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { domainName } from "../../host-agent/domain-xml.ts";
import { KubeClient } from "../../runtime/client.ts";
import { SimulatedAgents, type StratusProcess, startOperator } from "./processes.ts";
import { serveTinyImage, sharedControlPlane, useNamespace, waitFor, waitUntilGone } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `orch-${suffix}`;
const EMPTY_ZONE = `orch-empty-${suffix}`;
const HOSTS = [1, 2, 3, 4, 5].map((i) => `orch-h${i}-${suffix}`);
const OFFERING = `orch-small-${suffix}`;
const TEMPLATE = `orch-tiny-${suffix}`;
// The test driver reports 16 CPUs per host; 1.25 times that is room for 20 one-CPU VMs each.
const CPU_OVERCOMMIT = 1.25;
const PER_HOST = 20;

describe("orchestration over five simulated hosts", () => {
  let client: KubeClient;
  let namespace: string;
  let kubeconfigPath: string;
  let workDir: string;
  let operator: StratusProcess;

  let simulated: SimulatedAgents;
  const agents = () => simulated.agents;
  const startAgent = (host: string) => simulated.start(host);
  const startTheOperator = async (identity: string, extra: string[] = []) =>
    startOperator({
      kubeconfigPath,
      identity,
      args: [`--lease-namespace=${namespace}`, "--host-grace=2", "--workers=4", ...extra],
    });
  const vmSpec = (spec: Partial<VirtualMachine["spec"]> = {}) => ({
    zone: ZONE,
    serviceOffering: OFFERING,
    template: TEMPLATE,
    ...spec,
  });
  const createVm = (name: string, spec: Partial<VirtualMachine["spec"]> = {}) =>
    client.create(Resources.virtualMachines, { metadata: { name, namespace }, spec: vmSpec(spec) });
  const listVms = async (prefix: string) =>
    (await client.list<VirtualMachine>(Resources.virtualMachines, { namespace })).items.filter((vm) =>
      (vm.metadata.name as string).startsWith(prefix),
    );
  const domainsOf = (host: string) => simulated.domains(host);
  /** Every Stratus domain of every host, by domain name, with its disk files. */
  const stratusDomains = async () => {
    const all: { host: string; name: string; state: string; disks: string[] }[] = [];
    for (const host of agents().keys())
      for (const d of await domainsOf(host))
        all.push({ host, name: d.name, state: d.state, disks: d.disks ?? [] });
    return all;
  };
  const allRunning = (prefix: string, count: number, timeoutMs = 120_000) =>
    waitFor(
      `${count} ${prefix}* VMs Running`,
      async () => {
        const vms = await listVms(prefix);
        return vms.length === count && vms.every((vm) => vm.status?.state === "Running") ? vms : undefined;
      },
      { timeoutMs, intervalMs: 500 },
    );

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    kubeconfigPath = controlPlane.kubeconfigPath;
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "orch");
    workDir = await mkdtemp(join(tmpdir(), "stratus-orch-"));
    simulated = new SimulatedAgents({
      kubeconfigPath,
      zone: ZONE,
      leaseNamespace: namespace,
      workDir,
      args: ["--shutdown-grace=1"],
    });
    const { url, checksum } = await serveTinyImage();
    // Secondary storage: where a VM's disks are staged when maintenance moves them between the
    // simulated hosts' local pools.
    await client.create(Resources.zones, {
      metadata: { name: ZONE },
      spec: { secondaryStorage: { path: join(workDir, "secondary") } },
    });
    await client.create(Resources.serviceOfferings, {
      metadata: { name: OFFERING },
      spec: { cpu: 1, memory: "64Mi" },
    });
    await client.create(Resources.templates, {
      metadata: { name: TEMPLATE },
      spec: { source: { url }, checksum },
    });
    // Hosts exist before their agents: the administrator's overcommit is there from the start.
    for (const host of HOSTS)
      await client.create(Resources.hosts, {
        metadata: { name: host },
        spec: { zone: ZONE, cpuOvercommitRatio: CPU_OVERCOMMIT },
      });
    operator = await startTheOperator(`orch-operator-${suffix}`);
    await Promise.all(HOSTS.map(startAgent));
    await simulated.waitReady(client, HOSTS);
  });

  afterAll(async () => {
    await simulated?.stopAll();
    await operator?.stop("SIGKILL");
    await client?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("explains a VM that fits nowhere, host by host, and places it once a host can take it", async () => {
    await client.create(Resources.serviceOfferings, {
      metadata: { name: `orch-huge-${suffix}` },
      spec: { cpu: 1, memory: "64Gi" },
    });
    await client.mergePatch(Resources.hosts, HOSTS[1] as string, undefined, {
      spec: { allocationState: "Disabled" },
    });
    await createVm("huge", { serviceOffering: `orch-huge-${suffix}` });
    await createVm("tagged", { placement: { hostTags: ["gpu"] } });
    const refused = async (name: string, message: string) =>
      waitFor(`${name} to be refused with "${message}"`, async () => {
        const vm = await client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
        const scheduled = vm.status?.conditions?.find((c) => c.type === "Scheduled");
        return (
          scheduled?.status === "False" && scheduled.message === message && displayState(vm) === "Pending"
        );
      });
    await refused("huge", "0/5 hosts: 4 insufficient memory, 1 disabled");
    await refused("tagged", "0/5 hosts: 4 missing host tags, 1 disabled");
    await client.mergePatch(Resources.hosts, HOSTS[1] as string, undefined, {
      spec: { allocationState: "Enabled", tags: ["gpu"] },
    });
    await waitFor("the tagged VM to run on the tagged host", async () => {
      const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "tagged", namespace);
      return vm.status?.state === "Running" && vm.status.host === HOSTS[1];
    });
    await client.delete(Resources.virtualMachines, "huge", namespace);
    await client.delete(Resources.virtualMachines, "tagged", namespace);
    await waitUntilGone(client, Resources.virtualMachines, "tagged", namespace);
    await client.mergePatch(Resources.hosts, HOSTS[1] as string, undefined, { spec: { tags: null } });
  });

  it("spreads a burst of 100 VMs evenly over 5 hosts without overcommitting any, and refuses the 101st with per-host reasons", async () => {
    await Promise.all(Array.from({ length: 100 }, (_, i) => createVm(`spread-${i}`)));
    const vms = await allRunning("spread-", 100);
    const perHost = new Map<string, number>();
    for (const vm of vms)
      perHost.set(vm.status?.host as string, (perHost.get(vm.status?.host as string) ?? 0) + 1);
    // least-allocated with identical VMs: exactly even.
    expect([...perHost.values()]).toEqual(HOSTS.map(() => PER_HOST));
    for (const name of HOSTS) {
      const host = await client.get<Host>(Resources.hosts, name);
      const limit = allocatable(host);
      const allocated = await waitFor("the host roll-up", async () => {
        const h = await client.get<Host>(Resources.hosts, name);
        return h.status?.allocated?.virtualMachines === PER_HOST ? h.status.allocated : undefined;
      });
      expect(allocated.cpu).toBeLessThanOrEqual(limit.cpu);
      expect(parseQuantity(allocated.memory)).toBeLessThanOrEqual(limit.memoryBytes);
    }
    // Exactly one domain per VM, on the host the VM names, each with its root volume's disk.
    const domains = await stratusDomains();
    expect(domains).toHaveLength(100);
    for (const vm of vms) {
      const domain = domains.find((d) => d.name === domainName(vm.metadata.uid as string));
      expect(domain?.host).toBe(vm.status?.host);
      // The agent reports the root disk on the VM's ROOT Volume right after the VM itself.
      const root = await waitFor(`${vm.metadata.name}-root attached`, async () => {
        const volume = await client.get<Volume>(Resources.volumes, `${vm.metadata.name}-root`, namespace);
        return volume.status?.phase === "Attached" ? volume : undefined;
      });
      expect(root.status?.host).toBe(vm.status?.host);
      expect(domain?.disks).toEqual([root.status?.path]);
    }

    await createVm("one-too-many");
    const pending = await waitFor("one-too-many to be refused", async () => {
      const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "one-too-many", namespace);
      return vm.status?.conditions?.find((c) => c.type === "Scheduled" && c.status === "False");
    });
    expect(pending).toMatchObject({ reason: "Unschedulable", message: "0/5 hosts: 5 insufficient CPU" });
    expect(
      displayState(await client.get<VirtualMachine>(Resources.virtualMachines, "one-too-many", namespace)),
    ).toBe("Pending");
    // Room made: it is placed.
    await client.delete(Resources.virtualMachines, "spread-0", namespace);
    await waitFor(
      "one-too-many to run",
      async () =>
        (await client.get<VirtualMachine>(Resources.virtualMachines, "one-too-many", namespace)).status
          ?.state === "Running",
    );
  });

  it("moves every VM off a host in maintenance, and takes the host back on cancel", async () => {
    // Make room elsewhere: 40 spread VMs go.
    const victims = (await listVms("spread-")).filter((vm) => vm.status?.host !== HOSTS[0]).slice(0, 40);
    await Promise.all(
      victims.map((vm) => client.delete(Resources.virtualMachines, vm.metadata.name as string, namespace)),
    );
    await Promise.all(
      victims.map((vm) =>
        waitUntilGone(client, Resources.virtualMachines, vm.metadata.name as string, namespace),
      ),
    );
    const host = HOSTS[0] as string;
    const onHost = (await listVms("")).filter((vm) => vm.status?.host === host).map((vm) => vm.metadata.name);
    expect(onHost.length).toBeGreaterThan(0);
    await client.mergePatch(Resources.hosts, host, undefined, { spec: { maintenance: true } });
    await waitFor(
      "the host to reach Maintenance",
      async () => (await client.get<Host>(Resources.hosts, host)).status?.resourceState === "Maintenance",
      { timeoutMs: 120_000 },
    );
    const moved = await waitFor(
      "the evacuated VMs to run elsewhere",
      async () => {
        const vms = (await listVms("")).filter((vm) => onHost.includes(vm.metadata.name));
        return vms.every((vm) => vm.status?.state === "Running" && vm.status.host && vm.status.host !== host)
          ? vms
          : undefined;
      },
      { timeoutMs: 120_000 },
    );
    expect(moved).toHaveLength(onHost.length);
    expect(await domainsOf(host)).toEqual([]);
    // Their root disks moved with them (copied, verified, handed over), never made anew.
    for (const vm of moved) {
      const root = await client.get<Volume>(Resources.volumes, `${vm.metadata.name}-root`, namespace);
      expect(root.status).toMatchObject({ host: vm.status?.host, pool: `local-${vm.status?.host}` });
    }
    await client.mergePatch(Resources.hosts, host, undefined, { spec: { maintenance: false } });
    await waitFor(
      "the host to be Enabled",
      async () => (await client.get<Host>(Resources.hosts, host)).status?.resourceState === "Enabled",
    );
    await createVm("after-maintenance", { placement: { host } });
    await waitFor("a new VM to run on the host", async () => {
      const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "after-maintenance", namespace);
      return vm.status?.state === "Running" && vm.status.host === host;
    });
  }, 300_000);

  it("allocates 200 addresses concurrently without a duplicate, says when a network is exhausted, and takes addresses back", async () => {
    // Addresses do not need a host: these VMs are in a zone without hosts and stay Pending.
    await client.create(Resources.networks, {
      metadata: { name: "wide", namespace },
      spec: { zone: EMPTY_ZONE, cidr: "10.77.0.0/24" },
    });
    await client.create(Resources.networks, {
      metadata: { name: "narrow", namespace },
      spec: { zone: EMPTY_ZONE, cidr: "10.78.0.0/24", ipRange: { start: "10.78.0.10", end: "10.78.0.19" } },
    });
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        createVm(`ip-${i}`, { zone: EMPTY_ZONE, nics: [{ name: "eth0", network: "wide" }] }),
      ),
    );
    const addresses = await waitFor(
      "200 addresses",
      async () => {
        const items = (
          await client.list<IPAddress>(Resources.ipAddresses, {
            namespace,
            fieldSelector: "spec.network=wide",
          })
        ).items;
        return items.length >= 200 ? items : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 500 },
    );
    expect(addresses).toHaveLength(200);
    expect(new Set(addresses.map((a) => a.spec.address)).size).toBe(200);
    expect(new Set(addresses.map((a) => a.spec.virtualMachine)).size).toBe(200);
    const wide = await waitFor("the network's usage", async () => {
      const n = await client.get<Network>(Resources.networks, "wide", namespace);
      return n.status?.addresses?.used === 200 ? n : undefined;
    });
    expect(wide.status).toMatchObject({
      addresses: { total: 253, used: 200, free: 53 },
      vlan: expect.any(Number),
    });

    // Ten addresses, twelve VMs: two are told why they have none.
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        createVm(`narrow-${i}`, { zone: EMPTY_ZONE, nics: [{ name: "eth0", network: "narrow" }] }),
      ),
    );
    const starved = await waitFor("two VMs without an address", async () => {
      const vms = await listVms("narrow-");
      const waiting = vms.filter((vm) =>
        vm.status?.conditions?.some((c) => c.type === "NetworksReady" && c.reason === "AddressesExhausted"),
      );
      return waiting.length === 2 ? waiting : undefined;
    });
    expect(starved[0]?.status?.conditions?.find((c) => c.type === "NetworksReady")?.message).toBe(
      "network narrow has no free address left (10 in its range)",
    );
    // Deleting two holders returns their addresses, and the waiting VMs get them.
    const holders = (await listVms("narrow-")).filter(
      (vm) => !starved.some((s) => s.metadata.name === vm.metadata.name),
    );
    for (const vm of holders.slice(0, 2))
      await client.delete(Resources.virtualMachines, vm.metadata.name as string, namespace);
    await waitFor("the waiting VMs to get addresses", async () => {
      const vms = await listVms("narrow-");
      return (
        vms.length === 10 &&
        vms.every((vm) =>
          vm.status?.conditions?.some((c) => c.type === "NetworksReady" && c.status === "True"),
        )
      );
    });
    const narrow = (
      await client.list<IPAddress>(Resources.ipAddresses, { namespace, fieldSelector: "spec.network=narrow" })
    ).items;
    expect(narrow).toHaveLength(10);

    // A network in use cannot be deleted; it says which VMs hold it, and goes once they do.
    await client.delete(Resources.networks, "narrow", namespace);
    const inUse = await waitFor("the InUse condition", async () => {
      const n = await client.get<Network>(Resources.networks, "narrow", namespace);
      return n.status?.conditions?.find((c) => c.type === "InUse" && c.reason === "DeletionBlocked");
    });
    expect(inUse.message).toMatch(/^Deletion waits: VMs narrow-\d+, narrow-\d+/);
    const remaining = await listVms("narrow-");
    await Promise.all(
      remaining.map((vm) => client.delete(Resources.virtualMachines, vm.metadata.name as string, namespace)),
    );
    await waitUntilGone(client, Resources.networks, "narrow", namespace);
    await waitFor("the narrow addresses to be released", async () => {
      const items = (
        await client.list<IPAddress>(Resources.ipAddresses, {
          namespace,
          fieldSelector: "spec.network=narrow",
        })
      ).items;
      return items.length === 0;
    });
  });

  it("marks a host whose agent died NotReady within the lease duration plus grace, and its VMs Unknown (HostReady False)", async () => {
    const host = HOSTS[4] as string;
    const onHost = (await listVms("spread-")).filter((vm) => vm.status?.host === host);
    expect(onHost.length).toBeGreaterThan(0);
    await agents().get(host)?.stop("SIGKILL");
    const killedAt = Date.now();
    await waitFor(
      "the host to be NotReady",
      async () =>
        (await client.get<Host>(Resources.hosts, host)).status?.conditions?.some(
          (c) => c.type === "Ready" && c.status === "False" && c.reason === "HeartbeatExpired",
        ),
      { timeoutMs: 60_000 },
    );
    const seconds = (Date.now() - killedAt) / 1000;
    // 20 s Lease + 2 s grace, less the time since the last renewal; plus the poll interval.
    expect(seconds).toBeLessThanOrEqual(20 + 2 + 2);
    console.log(`host NotReady ${seconds.toFixed(1)} s after its agent was killed`);
    const hostReadyOf = (vm: VirtualMachine) => vm.status?.conditions?.find((c) => c.type === "HostReady");
    const lost = await waitFor("its VMs to be Unknown", async () => {
      const vms = (await listVms("spread-")).filter((vm) => vm.status?.host === host);
      return vms.every((vm) => displayState(vm) === "Unknown") ? vms : undefined;
    });
    expect(hostReadyOf(lost[0] as VirtualMachine)).toMatchObject({ status: "False", reason: "HostNotReady" });
    expect(hostReadyOf(lost[0] as VirtualMachine)?.message).toContain(
      `Host ${host} is not ready (HeartbeatExpired`,
    );
    // VMs on healthy hosts never get the condition.
    expect((await listVms("spread-")).filter((vm) => vm.status?.host !== host && hostReadyOf(vm))).toEqual(
      [],
    );
    // The agent comes back: the host is Ready, the condition goes, and its VMs run again on the same domains.
    await startAgent(host);
    await waitFor("its VMs to run again", async () => {
      const vms = (await listVms("spread-")).filter((vm) => vm.status?.host === host);
      return (
        vms.length === onHost.length &&
        vms.every((vm) => displayState(vm) === "Running" && hostReadyOf(vm) === undefined)
      );
    });
  });

  it("converges while the operator is SIGKILLed ten times and an agent once during 50 creations: every VM runs exactly once, nothing is orphaned", async () => {
    // A clean slate: the VMs of the earlier tests go.
    const earlier = await listVms("");
    await Promise.all(
      earlier.map((vm) => client.delete(Resources.virtualMachines, vm.metadata.name as string, namespace)),
    );
    await waitFor("the earlier VMs to be gone", async () => (await listVms("")).length === 0, {
      timeoutMs: 120_000,
    });
    await client.create(Resources.networks, {
      metadata: { name: "chaos-net", namespace },
      spec: { zone: ZONE, cidr: "10.79.0.0/24" },
    });

    await operator.stop("SIGKILL");
    const creations = (async () => {
      for (let i = 0; i < 50; i += 5) {
        await Promise.all(
          [0, 1, 2, 3, 4].map((j) =>
            createVm(`chaos-${i + j}`, { nics: [{ name: "eth0", network: "chaos-net" }] }),
          ),
        );
        await new Promise((resolve) => setTimeout(resolve, 400));
      }
    })();
    let kills = 0;
    for (; kills < 10; kills++) {
      const chaotic = await startTheOperator(`orch-chaos-${kills}-${suffix}`, ["--leader-elect=false"]);
      await new Promise((resolve) => setTimeout(resolve, 500 + Math.random() * 2500));
      await chaotic.stop("SIGKILL");
      if (kills === 4) {
        // One agent dies too, and comes back.
        await agents()
          .get(HOSTS[2] as string)
          ?.stop("SIGKILL");
        await startAgent(HOSTS[2] as string);
      }
    }
    await creations;
    expect(kills).toBe(10);
    operator = await startTheOperator(`orch-final-${suffix}`, ["--leader-elect=false"]);

    const vms = await allRunning("chaos-", 50, 180_000);
    const domains = await waitFor("exactly one domain per VM", async () => {
      const all = await stratusDomains();
      return all.length === 50 ? all : undefined;
    });
    for (const vm of vms) {
      const copies = domains.filter((d) => d.name === domainName(vm.metadata.uid as string));
      expect(copies, vm.metadata.name).toHaveLength(1);
      expect(copies[0]?.host).toBe(vm.status?.host);
      expect(copies[0]?.state).toBe("running");
    }
    // Nothing orphaned: every address, root volume and disk belongs to a VM that exists.
    const uids = new Set(vms.map((vm) => vm.metadata.uid));
    const names = new Set(vms.map((vm) => vm.metadata.name));
    const addresses = (await client.list<IPAddress>(Resources.ipAddresses, { namespace })).items;
    expect(addresses.filter((a) => !names.has(a.spec.virtualMachine as string))).toEqual([]);
    expect(new Set(addresses.map((a) => a.spec.virtualMachine)).size).toBe(50);
    expect(addresses).toHaveLength(50);
    const volumes = (await client.list<Volume>(Resources.volumes, { namespace })).items;
    expect(volumes.filter((v) => !v.metadata.ownerReferences?.some((o) => uids.has(o.uid)))).toEqual([]);
    expect(volumes).toHaveLength(50);
    const paths = new Set(volumes.map((v) => v.status?.path));
    expect(domains.flatMap((d) => d.disks).filter((disk) => !paths.has(disk))).toEqual([]);
  }, 600_000);
});

// HA failover against the real control plane with two host agents on libvirt's test driver, each
// with its own node-bound identity under the manifests' RBAC and admission policy: an agent frozen
// with SIGSTOP is fenced by its watchdog, the HA VM starts on the other host only after that
// (checked every 200 ms, not only at the end) and takes its shared disk along, a VM without HA
// stays Unknown, and the host that comes back reports the fencing and never starts the VM it lost.
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { displayState } from "../../crds/display-state.ts";
import { type Host, Resources, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { domainName } from "../../host-agent/domain-xml.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import { EVENT } from "../../runtime/events.ts";
import { applyManifests, TestIdentities } from "./identities.ts";
import { type DebugDomain, SimulatedAgents, type StratusProcess, startOperator } from "./processes.ts";
import { serveTinyImage, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `ha-${suffix}`;
const HOSTS = [`ha-h1-${suffix}`, `ha-h2-${suffix}`];
const HA_OFFERING = `ha-small-${suffix}`;
const PLAIN_OFFERING = `plain-small-${suffix}`;
const TEMPLATE = `ha-tiny-${suffix}`;
const POOL = `ha-shared-${suffix}`;
/** Seconds: each agent's Lease, and the operator's grace past it. */
const LEASE = 8;
const GRACE = 2;

describe("HA failover over two simulated hosts", () => {
  let client: KubeClient;
  let namespace: string;
  let kubeconfigPath: string;
  let workDir: string;
  let operator: StratusProcess;
  let simulated: SimulatedAgents;
  let identities: TestIdentities;
  /** The domains each host last answered with; a frozen agent's guests are as it last said. */
  const lastSeen = new Map<string, DebugDomain[]>();
  const startAgent = (host: string) => simulated.start(host);
  const vm = (name: string) => client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
  const alive = (host: string) => {
    const child = simulated.agents.get(host)?.child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  };
  /** Hosts on which the domain runs now: a dead agent's test driver died with it. */
  const runningOn = async (domain: string): Promise<string[]> => {
    const hosts: string[] = [];
    for (const host of HOSTS) {
      if (!alive(host)) {
        lastSeen.delete(host);
        continue;
      }
      try {
        lastSeen.set(host, await simulated.domains(host, 500));
      } catch {
        // Frozen (or busy): its guests are as it last said.
      }
      if (lastSeen.get(host)?.some((d) => d.name === domain && d.state === "running")) hosts.push(host);
    }
    return hosts;
  };
  const events = async (ns: string, name: string) =>
    (
      await client.list<{ reason?: string; note?: string; regarding?: { name?: string } } & KubeObject>(
        EVENT,
        {
          namespace: ns,
        },
      )
    ).items.filter((e) => e.regarding?.name === name);

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    kubeconfigPath = controlPlane.kubeconfigPath;
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "ha");
    workDir = await mkdtemp(join(tmpdir(), "stratus-ha-"));
    // Each agent with its own node-bound identity, under the manifests' RBAC and admission policy:
    // the restart elsewhere (VM and shared disk) goes through what admission lets an agent take.
    await applyManifests();
    identities = new TestIdentities(client, workDir);
    const kubeconfigs = new Map<string, Promise<string>>();
    simulated = new SimulatedAgents({
      kubeconfigPath,
      kubeconfigFor: (host) => {
        if (!kubeconfigs.has(host))
          kubeconfigs.set(host, identities.hostAgent(host, { leaseNamespace: namespace }));
        return kubeconfigs.get(host) as Promise<string>;
      },
      zone: ZONE,
      leaseNamespace: namespace,
      workDir,
      args: ["--shutdown-grace=1", `--lease-duration=${LEASE}`],
    });
    const shared = join(workDir, "shared");
    await mkdir(shared, { recursive: true });
    // Not a mount here: the marker says every host of the zone sees this directory.
    await writeFile(join(shared, ".stratus-shared"), "");
    const { url, checksum } = await serveTinyImage();
    await client.create(Resources.zones, {
      metadata: { name: ZONE },
      spec: { secondaryStorage: { path: join(workDir, "secondary") } },
    });
    await client.create(Resources.storagePools, {
      metadata: { name: POOL },
      spec: { zone: ZONE, type: "sharedMountPoint", path: shared },
    });
    for (const [name, highAvailability] of [
      [HA_OFFERING, true],
      [PLAIN_OFFERING, false],
    ] as const)
      await client.create(Resources.serviceOfferings, {
        metadata: { name },
        spec: {
          cpu: 1,
          memory: "64Mi",
          storageType: "shared",
          ...(highAvailability ? { highAvailability } : {}),
        },
      });
    await client.create(Resources.templates, {
      metadata: { name: TEMPLATE },
      spec: { source: { url }, checksum },
    });
    operator = await startOperator({
      kubeconfigPath,
      identity: `ha-operator-${suffix}`,
      args: [`--lease-namespace=${namespace}`, `--host-grace=${GRACE}`],
    });
    await Promise.all(HOSTS.map(startAgent));
    await simulated.waitReady(client, HOSTS);
  });

  afterEach(async (context) => {
    if (context.task.result?.state !== "fail") return;
    const vms = await client.list<VirtualMachine>(Resources.virtualMachines, { namespace });
    for (const each of vms.items)
      process.stderr.write(`--- VM ${each.metadata.name}: ${JSON.stringify(each.status)}\n`);
    process.stderr.write(`--- operator:\n${operator?.logs().slice(-4000)}\n`);
    for (const [host, agent] of simulated.agents)
      process.stderr.write(`--- agent ${host}:\n${agent.logs().slice(-4000)}\n`);
  });

  afterAll(async () => {
    await simulated?.stopAll();
    await operator?.stop("SIGKILL");
    await identities?.cleanup();
    await client?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("restarts an HA VM elsewhere once its frozen host is fenced, and never runs it twice", async () => {
    await client.create(Resources.virtualMachines, {
      metadata: { name: "ha-1", namespace },
      spec: { zone: ZONE, serviceOffering: HA_OFFERING, template: TEMPLATE },
    });
    const placed = await waitFor("ha-1 Running", async () => {
      const current = await vm("ha-1");
      return current.status?.state === "Running" ? current : undefined;
    });
    const lost = placed.status?.host as string;
    const survivor = HOSTS.find((h) => h !== lost) as string;
    await client.create(Resources.virtualMachines, {
      metadata: { name: "plain-1", namespace },
      spec: { zone: ZONE, serviceOffering: PLAIN_OFFERING, template: TEMPLATE, placement: { host: lost } },
    });
    await waitFor("plain-1 Running", async () => (await vm("plain-1")).status?.state === "Running");
    const domain = domainName(placed.metadata.uid as string);
    expect(await runningOn(domain)).toEqual([lost]);

    // Sample where the guest runs until the test ends: never on two hosts at once.
    const twice: string[][] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const hosts = await runningOn(domain);
        if (hosts.length > 1) twice.push(hosts);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();

    const frozen = simulated.agents.get(lost) as StratusProcess;
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      frozen.child.once("exit", (_, signal) => resolve(signal)),
    );
    frozen.child.kill("SIGSTOP");
    const frozenAt = Date.now();
    // Its watchdog kills it (a simulated host's guests live in the agent) before the Lease expires.
    expect(await exited).toBe("SIGKILL");
    const fencedAfter = (Date.now() - frozenAt) / 1000;
    expect(fencedAfter).toBeLessThan(LEASE);

    const restarted = await waitFor(
      `ha-1 Running on ${survivor}`,
      async () => {
        const current = await vm("ha-1");
        return current.status?.host === survivor && current.status.failover?.restartedOn === survivor
          ? current
          : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    const restartedAfter = (Date.now() - frozenAt) / 1000;
    console.log(
      `fenced ${fencedAfter.toFixed(1)} s and running on ${survivor} ${restartedAfter.toFixed(1)} s after the freeze`,
    );
    expect(restarted.status?.failover).toMatchObject({ from: lost });
    expect(restarted.status?.failover?.downtimeSeconds).toBeLessThanOrEqual(LEASE + GRACE + 30);
    // The release came no earlier than the Lease's expiry plus the grace after the last renewal.
    const failover = restarted.status?.failover as NonNullable<
      NonNullable<VirtualMachine["status"]>["failover"]
    >;
    expect(Date.parse(failover.releasedAt) - Date.parse(failover.lostAt)).toBeGreaterThanOrEqual(
      (LEASE + GRACE) * 1000,
    );
    expect((await events(namespace, "ha-1")).map((e) => e.reason)).toEqual(
      expect.arrayContaining(["HostLost", "Restarted"]),
    );
    // Its disk in the shared pool went with it: storage released it there, the survivor took it.
    const root = await waitFor(`ha-1-root held by ${survivor}`, async () => {
      const current = await client.get<Volume>(Resources.volumes, "ha-1-root", namespace);
      return current.status?.host === survivor ? current : undefined;
    });
    expect(root.status).toMatchObject({ pool: POOL, releasedTo: survivor, phase: "Attached" });

    // Without HA the other VM stays on its lost host, Unknown, saying why.
    const plain = await waitFor("plain-1 Unknown", async () => {
      const current = await vm("plain-1");
      return displayState(current) === "Unknown" ? current : undefined;
    });
    expect(plain.status?.host).toBe(lost);
    expect(plain.status?.conditions?.find((c) => c.type === "HostReady")).toMatchObject({
      status: "False",
      reason: "HostNotReady",
    });

    // The host comes back: it says it was fenced, runs its own VM again, and never the one it lost.
    await startAgent(lost);
    await waitFor("the Fenced Event on the returning host", async () =>
      (await events("default", lost)).some((e) => e.reason === "Fenced"),
    );
    await waitFor("plain-1 Running again", async () => displayState(await vm("plain-1")) === "Running");
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(await runningOn(domain)).toEqual([survivor]);
    sampling = false;
    await sampler;
    expect(twice).toEqual([]);
  }, 180_000);

  it("starts a VM without HA elsewhere once an administrator declares its lost host degraded", async () => {
    const haHost = (await vm("ha-1")).status?.host as string;
    const other = HOSTS.find((h) => h !== haHost) as string;
    await client.create(Resources.virtualMachines, {
      metadata: { name: "plain-2", namespace },
      spec: { zone: ZONE, serviceOffering: PLAIN_OFFERING, template: TEMPLATE, placement: { host: other } },
    });
    const placed = await waitFor("plain-2 Running", async () => {
      const current = await vm("plain-2");
      return current.status?.state === "Running" ? current : undefined;
    });
    // Unpinned, so that it may go elsewhere; it stays where it runs.
    await client.mergePatch(Resources.virtualMachines, "plain-2", namespace, { spec: { placement: null } });
    await simulated.agents.get(other)?.stop("SIGKILL");
    await waitFor("plain-2 Unknown", async () => displayState(await vm("plain-2")) === "Unknown", {
      timeoutMs: 60_000,
    });
    await client.mergePatch(Resources.hosts, other, undefined, { spec: { degraded: true } });
    const moved = await waitFor(
      `plain-2 Running on ${haHost}`,
      async () => {
        const current = await vm("plain-2");
        return current.status?.failover?.restartedOn === haHost ? current : undefined;
      },
      { timeoutMs: 60_000 },
    );
    expect(moved.status?.failover?.from).toBe(other);
    expect((await events(namespace, "plain-2")).map((e) => e.reason)).toContain("HostDegraded");
    const host = await waitFor("the host Degraded", async () => {
      const current = await client.get<Host>(Resources.hosts, other);
      return current.status?.resourceState === "Degraded" ? current : undefined;
    });
    expect(host.status?.conditions?.find((c) => c.type === "Schedulable")?.status).toBe("False");
    // The host comes back: the VM it lost is not started there.
    await startAgent(other);
    await simulated.waitReady(client, [other]);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(await runningOn(domainName(placed.metadata.uid as string))).toEqual([haHost]);
    await client.mergePatch(Resources.hosts, other, undefined, { spec: { degraded: false } });
    await waitFor(
      "the host Enabled again",
      async () => (await client.get<Host>(Resources.hosts, other)).status?.resourceState === "Enabled",
    );
  }, 180_000);
});

// Three host agents on libvirt's test driver (three simulated hosts) and the operator against the
// real control plane: each agent runs exactly the VMs placed on its host (here by the admin pin,
// which the scheduler honours), follows runStrategy, cleans up on delete, reports its Host and
// renews its Lease, and never touches domains Stratus did not create.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { displayState } from "../../crds/display-state.ts";
import { type Host, localPoolName, Resources, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { macFor } from "../../crds/nics.ts";
import { domainName } from "../../host-agent/domain-xml.ts";
import type { DomainInfo } from "../../host-agent/libvirt/connection.ts";
import { libvirtNetworkName } from "../../host-agent/network-xml.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import { LEASE, type Lease } from "../../runtime/leader-election.ts";
import { qcow2Header } from "../fixtures/qcow2.ts";
import { type StratusProcess, startHostAgent, startOperator } from "./processes.ts";
import {
  agentOwner,
  run,
  serveTinyImage,
  sharedControlPlane,
  useNamespace,
  waitFor,
  waitUntilGone,
} from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const HOSTS = ["a", "b", "c"].map((h) => `agent-${h}-${suffix}`);
const OFFERING = `agent-small-${suffix}`;
const TEMPLATE = `agent-tiny-${suffix}`;
const IMAGE = qcow2Header(2n ** 30n);
const IMAGE_CHECKSUM = `sha256:${createHash("sha256").update(IMAGE).digest("hex")}`;

describe("host agents on simulated hosts", () => {
  let client: KubeClient;
  let namespace: string;
  let workDir: string;
  let imageBase: string;
  const agents = new Map<string, StratusProcess>();
  let operator: StratusProcess;
  const createTemplate = (name: string, url: string, checksum = IMAGE_CHECKSUM) =>
    client.create(Resources.templates, { metadata: { name }, spec: { source: { url }, checksum } });
  const vmCondition = async (name: string, reason: string) =>
    waitFor(`${name} to report ${reason}`, async () => {
      const ready = (await getVm(name)).status?.conditions?.find((c) => c.type === "Ready");
      return ready?.reason === reason ? ready : undefined;
    });

  const domainsOf = async (host: string) =>
    JSON.parse((await (agents.get(host) as StratusProcess).get("/debug/domains")).body) as (DomainInfo & {
      disks?: string[];
    })[];
  const getVm = (name: string) => client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
  const createVm = (name: string, host: string, spec: Partial<VirtualMachine["spec"]> = {}) =>
    client.create(Resources.virtualMachines, {
      metadata: { name, namespace },
      spec: {
        zone: "agent-zone",
        serviceOffering: OFFERING,
        template: TEMPLATE,
        placement: { host },
        ...spec,
      },
    });

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "agents");
    await client.create(Resources.serviceOfferings, {
      metadata: { name: OFFERING },
      spec: { cpu: 1, memory: "128Mi" },
    });
    workDir = await mkdtemp(join(tmpdir(), "stratus-agents-"));
    const served = await serveTinyImage();
    imageBase = served.base;
    await createTemplate(TEMPLATE, `${imageBase}/tiny.qcow2`);
    operator = await startOperator({
      kubeconfigPath: controlPlane.kubeconfigPath,
      identity: `agents-operator-${suffix}`,
      args: [`--lease-namespace=${namespace}`],
    });
    for (const host of HOSTS) {
      agents.set(
        host,
        await startHostAgent({
          kubeconfigPath: controlPlane.kubeconfigPath,
          hostName: host,
          zone: "agent-zone",
          leaseNamespace: namespace,
          workDir,
        }),
      );
    }
  });
  afterAll(async () => {
    for (const agent of agents.values()) await agent.stop("SIGKILL");
    await operator?.stop("SIGKILL");
    await client?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("registers each host with its capacity and renews its Lease", async () => {
    for (const host of HOSTS) {
      const registered = await waitFor(`Host ${host}`, async () => {
        const h = await client.get<Host>(Resources.hosts, host).catch(() => undefined);
        // Registered by its agent, and Ready by the fabric monitor once its Lease is renewed.
        const ready = h?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        return h?.status?.capacity && ready ? h : undefined;
      });
      expect(registered.spec.zone).toBe("agent-zone");
      expect(registered.status).toMatchObject({
        capacity: { cpu: 16, memory: "3Gi", storage: "100Gi" },
        hypervisor: {
          type: "Simulator",
          uri: "test:///default",
          libvirtVersion: expect.stringMatching(/^\d+\.\d+\.\d+$/),
        },
      });
    }
    const renewTime = async () =>
      (await client.get<Lease>(LEASE, `host-${HOSTS[0]}`, namespace)).spec.renewTime;
    // Heartbeats renew the Lease; they do not write the Host: across three renewals it is unchanged.
    const host = await client.get<Host>(Resources.hosts, HOSTS[0] as string);
    let previous = await waitFor("a heartbeat", () => renewTime().catch(() => undefined));
    for (let renewal = 0; renewal < 3; renewal++) {
      previous = await waitFor(
        "the heartbeat to be renewed",
        async () => {
          const current = await renewTime();
          return current !== previous ? current : undefined;
        },
        { timeoutMs: 10_000 },
      );
    }
    expect((await client.get<Host>(Resources.hosts, HOSTS[0] as string)).metadata.resourceVersion).toBe(
      host.metadata.resourceVersion,
    );
  });

  it("runs each VM on the host it is bound to, and only there", async () => {
    for (const [index, host] of HOSTS.entries()) {
      await createVm(`vm-${index}-1`, host);
      await createVm(`vm-${index}-2`, host);
    }
    for (const [index, host] of HOSTS.entries()) {
      for (const name of [`vm-${index}-1`, `vm-${index}-2`]) {
        const vm = await waitFor(`${name} Running`, async () => {
          const v = await getVm(name);
          return v.status?.state === "Running" ? v : undefined;
        }).catch(async (error: Error) => {
          throw new Error(`${error.message}; status: ${JSON.stringify((await getVm(name)).status)}`);
        });
        expect(vm.status).toMatchObject({ host, domainUUID: vm.metadata.uid });
        expect(vm.status?.conditions).toContainEqual(
          expect.objectContaining({ type: "Ready", status: "True" }),
        );
        expect(vm.metadata.finalizers).toEqual(["stratus.io/domain"]);
      }
    }
    for (const [index, host] of HOSTS.entries()) {
      const expected = await Promise.all(
        [`vm-${index}-1`, `vm-${index}-2`].map(async (n) =>
          domainName((await getVm(n)).metadata.uid as string),
        ),
      );
      const domains = await domainsOf(host);
      expect(
        domains
          .filter((d) => d.name.startsWith("stratus-"))
          .map((d) => d.name)
          .sort(),
      ).toEqual(expected.sort());
      // The test driver's own domain is not Stratus's: it is left alone.
      expect(domains).toContainEqual(expect.objectContaining({ name: "test", state: "running" }));
    }
  });

  it("follows runStrategy: Halted stops the domain, Always starts it again", async () => {
    const uid = (await getVm("vm-1-1")).metadata.uid as string;
    await client.mergePatch(Resources.virtualMachines, "vm-1-1", namespace, {
      spec: { runStrategy: "Halted" },
    });
    await waitFor("vm-1-1 Stopped", async () => (await getVm("vm-1-1")).status?.state === "Stopped");
    expect((await domainsOf(HOSTS[1] as string)).find((d) => d.name === domainName(uid))?.state).toBe(
      "shutoff",
    );
    await client.mergePatch(Resources.virtualMachines, "vm-1-1", namespace, {
      spec: { runStrategy: "Always" },
    });
    await waitFor("vm-1-1 Running", async () => (await getVm("vm-1-1")).status?.state === "Running");
    expect((await domainsOf(HOSTS[1] as string)).find((d) => d.name === domainName(uid))?.state).toBe(
      "running",
    );
  });

  it("deletes the domain with its VM and leaves nothing behind", async () => {
    const uid = (await getVm("vm-2-2")).metadata.uid as string;
    await client.delete(Resources.virtualMachines, "vm-2-2", namespace);
    await waitUntilGone(client, Resources.virtualMachines, "vm-2-2", namespace);
    expect((await domainsOf(HOSTS[2] as string)).map((d) => d.name)).not.toContain(domainName(uid));
  });

  it("creates the root disk from the cached template and attaches data volumes", async () => {
    const host = HOSTS[0] as string;
    await client.create(Resources.volumes, {
      metadata: { name: "data-1", namespace },
      spec: { zone: "agent-zone", size: "5Gi" },
    });
    await createVm("vm-disks", host, {
      rootDisk: { size: "4Gi" },
      dataVolumes: [{ name: "data", volume: "data-1" }],
    });
    const vm = await waitFor("vm-disks Running", async () => {
      const v = await getVm("vm-disks");
      return v.status?.state === "Running" ? v : undefined;
    });
    const volume = await waitFor("the volume to be attached", async () => {
      const v = await client.get<Volume>(Resources.volumes, "data-1", namespace);
      return v.status?.phase === "Attached" ? v : undefined;
    });
    expect(volume.status).toMatchObject({
      host,
      pool: localPoolName(host),
      poolType: "local",
      capacity: "5Gi",
      attachedTo: { virtualMachine: "vm-disks", device: "vdb" },
    });
    const domain = (await domainsOf(host)).find((d) => d.name === domainName(vm.metadata.uid as string));
    expect(domain?.disks).toEqual([
      join(workDir, "pools", host, `root-${vm.metadata.uid}`),
      volume.status?.path,
    ]);
    // The template was downloaded once into this host's cache, and only this host's.
    const templateUid = (await client.get(Resources.templates, TEMPLATE)).metadata.uid;
    expect(readdirSync(join(workDir, "cache", host))).toContain(`${templateUid}.qcow2`);

    // A volume in use is not deleted; once its VM is gone, its disk goes with it.
    await client.delete(Resources.volumes, "data-1", namespace);
    await client.delete(Resources.virtualMachines, "vm-disks", namespace);
    await waitUntilGone(client, Resources.volumes, "data-1", namespace);
    const remaining = (await domainsOf(host)).flatMap((d) => d.disks ?? []);
    expect(
      remaining.filter(
        (path) => path.includes(vm.metadata.uid as string) || path.includes(volume.metadata.uid as string),
      ),
    ).toEqual([]);
  });

  it("reports unreachable templates, wrong checksums and disks larger than the pool, and keeps serving", async () => {
    const host = HOSTS[1] as string;
    await createTemplate(`unreachable-${suffix}`, `${imageBase}/missing.qcow2`);
    await createTemplate(`tampered-${suffix}`, `${imageBase}/tiny.qcow2`, `sha256:${"1".repeat(64)}`);
    await createVm("vm-unreachable", host, { template: `unreachable-${suffix}` });
    await createVm("vm-tampered", host, { template: `tampered-${suffix}` });
    await createVm("vm-huge", host, { rootDisk: { size: "64Ti" } });
    expect((await vmCondition("vm-unreachable", "DownloadFailed")).message).toBe(
      `cannot download ${imageBase}/missing.qcow2: HTTP 404`,
    );
    expect((await vmCondition("vm-tampered", "ChecksumMismatch")).message).toBe(
      `${imageBase}/tiny.qcow2 has checksum ${IMAGE_CHECKSUM}, the template expects sha256:${"1".repeat(64)}`,
    );
    // A disk larger than any pool it could go to: the scheduler says so before any host tries.
    const huge = await waitFor("vm-huge to be refused by placement", async () => {
      const scheduled = (await getVm("vm-huge")).status?.conditions?.find((c) => c.type === "Scheduled");
      return scheduled?.status === "False" ? scheduled : undefined;
    });
    expect(huge.message).toMatch(new RegExp(`volume vm-huge-root: pool local-${host} has too little room`));
    expect(existsSync(join(workDir, "cache", host))).toBe(true);
    await createVm("vm-fine", host);
    await waitFor(
      "a good VM on the same host to run",
      async () => (await getVm("vm-fine")).status?.state === "Running",
    );
  });

  it("puts NICs on the VM's networks with a DHCP reservation for each address, and removes them with the VM", async () => {
    const host = HOSTS[2] as string;
    const network = await client.create<KubeObject & { spec: object }>(Resources.networks, {
      metadata: { name: "backend", namespace },
      spec: { zone: "agent-zone", cidr: "10.55.0.0/24" },
    });
    await createVm("vm-static", host, {
      nics: [{ name: "eth0", network: "backend", ipAddress: "10.55.0.20" }],
    });
    await createVm("vm-allocated", host, { nics: [{ name: "eth0", network: "backend" }] });
    const running = async (name: string) =>
      waitFor(`${name} Running with its address`, async () => {
        const v = await getVm(name);
        return v.status?.state === "Running" && v.status.nics?.[0]?.ipAddress ? v : undefined;
      });
    const [staticVm, allocatedVm] = [await running("vm-static"), await running("vm-allocated")];
    // IPAM gave the other VM the first free address of the range.
    expect(allocatedVm.status?.nics?.[0]?.ipAddress).toBe("10.55.0.2");
    expect(staticVm.status?.nics).toEqual([
      {
        name: "eth0",
        network: "backend",
        ipAddress: "10.55.0.20",
        macAddress: macFor(staticVm.metadata.uid as string, 0),
      },
    ]);
    const networks = async () =>
      JSON.parse((await (agents.get(host) as StratusProcess).get("/debug/networks")).body) as {
        name: string;
        dhcpHosts: { mac: string; ip: string }[];
      }[];
    const owner = await agentOwner(client, host);
    const reservations = async () =>
      (await networks()).find((n) => n.name === libvirtNetworkName(owner, network.metadata.uid as string))
        ?.dhcpHosts ?? [];
    await waitFor("both reservations", async () => (await reservations()).length === 2);
    expect((await reservations()).map((h) => [h.mac, h.ip]).sort()).toEqual(
      [
        [macFor(staticVm.metadata.uid as string, 0), "10.55.0.20"],
        [allocatedVm.status?.nics?.[0]?.macAddress, "10.55.0.2"],
      ].sort(),
    );
    // Other hosts have no such network: it exists only where its VMs run.
    expect(
      JSON.parse((await (agents.get(HOSTS[0] as string) as StratusProcess).get("/debug/networks")).body),
    ).toEqual([]);

    await client.delete(Resources.virtualMachines, "vm-static", namespace);
    await waitFor("the static reservation to go", async () => (await reservations()).length === 1);
    await client.delete(Resources.virtualMachines, "vm-allocated", namespace);
    await waitFor("the network to be torn down", async () => (await networks()).length === 0);
  });

  it("refuses to start, with a message saying why, when the libvirt daemon does not answer", async () => {
    const { kubeconfigPath } = await sharedControlPlane();
    const result = await run(process.execPath, [
      "host-agent/main.ts",
      `--kubeconfig=${kubeconfigPath}`,
      "--host-name=no-daemon",
      "--zone=agent-zone",
      "--libvirt-uri=qemu+unix:///system?socket=/nonexistent/libvirt-sock",
      "--health-address=127.0.0.1:0",
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      "stratus-host-agent: cannot connect to libvirt at qemu+unix:///system?socket=/nonexistent/libvirt-sock: libvirt open qemu+unix:///system?socket=/nonexistent/libvirt-sock: the libvirt daemon does not answer (is libvirtd running?)",
    );
  });

  it("reports a missing offering on the VM, keeps serving the others, and recovers when it appears", async () => {
    const missing = `missing-${suffix}`;
    await createVm("vm-no-offering", HOSTS[0] as string, { serviceOffering: missing });
    // The orchestration cannot size it, so it is not placed; it says why.
    const failed = await waitFor("the Scheduled condition", async () => {
      const v = await getVm("vm-no-offering");
      const refused = v.status?.conditions?.some((c) => c.type === "Scheduled" && c.status === "False");
      return refused && !v.status?.host && displayState(v) === "Pending" ? v : undefined;
    });
    expect(failed.status?.conditions).toContainEqual(
      expect.objectContaining({
        type: "Scheduled",
        status: "False",
        reason: "ServiceOfferingNotFound",
        message: `ServiceOffering "${missing}" does not exist.`,
      }),
    );
    await createVm("vm-after-error", HOSTS[0] as string);
    await waitFor(
      "another VM on the same host to run",
      async () => (await getVm("vm-after-error")).status?.state === "Running",
    );

    await client.create(Resources.serviceOfferings, {
      metadata: { name: missing },
      spec: { cpu: 1, memory: "64Mi" },
    });
    await waitFor(
      "the VM to run once its offering exists",
      async () => (await getVm("vm-no-offering")).status?.state === "Running",
    );
  });

  it("watches only what is its own: VMs, volumes and networks of other hosts reach it as no watch event", async () => {
    const [busy, quiet] = [HOSTS[0] as string, HOSTS[1] as string];
    /** Watch events an agent received, by resource (its informers count them). */
    const received = async (host: string) => {
      const metrics = (await (agents.get(host) as StratusProcess).get("/metrics")).body;
      const count: Record<string, number> = {};
      for (const [, resource, value] of metrics.matchAll(
        /^stratus_informer_watch_events_total\{[^}]*resource="([^"]+)"[^}]*\} (\d+)/gm,
      ))
        count[resource as string] = (count[resource as string] ?? 0) + Number(value);
      return count;
    };
    const before = { busy: await received(busy), quiet: await received(quiet) };
    await client.create(Resources.networks, {
      metadata: { name: "busy-net", namespace },
      spec: { zone: "agent-zone", cidr: "10.56.0.0/24" },
    });
    await client.create(Resources.volumes, {
      metadata: { name: "busy-data", namespace },
      spec: { zone: "agent-zone", size: "1Gi" },
    });
    await createVm("busy-1", busy, {
      nics: [{ name: "eth0", network: "busy-net" }],
      dataVolumes: [{ name: "data", volume: "busy-data" }],
    });
    await createVm("busy-2", busy, { nics: [{ name: "eth0", network: "busy-net" }] });
    for (const name of ["busy-1", "busy-2"])
      await waitFor(`${name} to run`, async () => (await getVm(name)).status?.state === "Running");
    for (const name of ["busy-1", "busy-2"]) await client.delete(Resources.virtualMachines, name, namespace);
    for (const name of ["busy-1", "busy-2"])
      await waitUntilGone(client, Resources.virtualMachines, name, namespace);
    await client.delete(Resources.volumes, "busy-data", namespace);
    await waitUntilGone(client, Resources.volumes, "busy-data", namespace);
    const after = { busy: await received(busy), quiet: await received(quiet) };
    // The busy host's agent saw its VMs and their volumes come and go (its network it read once)...
    for (const resource of ["virtualmachines", "volumes"])
      expect((after.busy[resource] ?? 0) - (before.busy[resource] ?? 0)).toBeGreaterThan(0);
    // ...and the quiet host's agent, in the same cluster, saw none of it.
    for (const resource of ["virtualmachines", "volumes", "networks", "ipaddresses"])
      expect({ resource, events: (after.quiet[resource] ?? 0) - (before.quiet[resource] ?? 0) }).toEqual({
        resource,
        events: 0,
      });
  });
});

// Three host agents on libvirt's test driver (three simulated hosts) against the real control
// plane: each runs exactly the VMs bound to it, follows runStrategy, cleans up on delete, reports
// its Host and renews its Lease, and never touches domains Stratus did not create.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Host, Resources, type VirtualMachine } from "../../crds/index.ts";
import { domainName } from "../../host-agent/domain-xml.ts";
import type { DomainInfo } from "../../host-agent/libvirt/connection.ts";
import { isNotFound, KubeClient } from "../../runtime/client.ts";
import { LEASE, type Lease } from "../../runtime/leader-election.ts";
import { type StratusProcess, startHostAgent } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const HOSTS = ["a", "b", "c"].map((h) => `agent-${h}-${suffix}`);
const OFFERING = `agent-small-${suffix}`;

describe("host agents on simulated hosts", () => {
  let client: KubeClient;
  let namespace: string;
  const agents = new Map<string, StratusProcess>();

  const domainsOf = async (host: string) =>
    JSON.parse((await (agents.get(host) as StratusProcess).get("/debug/domains")).body) as DomainInfo[];
  const getVm = (name: string) => client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
  const createVm = (name: string, host: string, spec: Partial<VirtualMachine["spec"]> = {}) =>
    client.create(Resources.virtualMachines, {
      metadata: { name, namespace },
      spec: {
        zone: "agent-zone",
        serviceOffering: OFFERING,
        template: "tiny-linux",
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
    for (const host of HOSTS) {
      agents.set(
        host,
        await startHostAgent({
          kubeconfigPath: controlPlane.kubeconfigPath,
          hostName: host,
          args: ["--zone=agent-zone", `--lease-namespace=${namespace}`, "--heartbeat-interval=1"],
        }),
      );
    }
  });
  afterAll(async () => {
    for (const agent of agents.values()) await agent.stop("SIGKILL");
    await client?.close();
  });

  it("registers each host with its capacity and renews its Lease", async () => {
    for (const host of HOSTS) {
      const registered = await waitFor(`Host ${host}`, async () => {
        const h = await client.get<Host>(Resources.hosts, host).catch(() => undefined);
        return h?.status?.capacity ? h : undefined;
      });
      expect(registered.spec.zone).toBe("agent-zone");
      expect(registered.status).toMatchObject({
        capacity: { cpu: 16, memory: "3Gi" },
        hypervisor: {
          type: "Simulator",
          uri: "test:///default",
          libvirtVersion: expect.stringMatching(/^\d+\.\d+\.\d+$/),
        },
      });
    }
    const renewTime = async () =>
      (await client.get<Lease>(LEASE, `host-${HOSTS[0]}`, namespace)).spec.renewTime;
    const first = await waitFor("a heartbeat", () => renewTime().catch(() => undefined));
    await waitFor("the heartbeat to be renewed", async () => (await renewTime()) !== first, {
      timeoutMs: 10_000,
    });
    // Heartbeats renew the Lease; they do not write the Host.
    const host = await client.get<Host>(Resources.hosts, HOSTS[0] as string);
    await new Promise((resolve) => setTimeout(resolve, 2500));
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
        });
        expect(vm.status).toMatchObject({ host, domainUUID: vm.metadata.uid });
        expect(vm.status?.conditions).toContainEqual(
          expect.objectContaining({ type: "Ready", status: "True" }),
        );
        expect(vm.metadata.finalizers).toContain("stratus.io/host-agent");
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
    await waitFor("vm-2-2 gone", () => getVm("vm-2-2").then(() => false, isNotFound));
    expect((await domainsOf(HOSTS[2] as string)).map((d) => d.name)).not.toContain(domainName(uid));
  });

  it("reports a missing offering on the VM, keeps serving the others, and recovers when it appears", async () => {
    const missing = `missing-${suffix}`;
    await createVm("vm-no-offering", HOSTS[0] as string, { serviceOffering: missing });
    const failed = await waitFor("the error condition", async () => {
      const v = await getVm("vm-no-offering");
      return v.status?.state === "Error" ? v : undefined;
    });
    expect(failed.status?.conditions).toContainEqual(
      expect.objectContaining({
        type: "Ready",
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
});

// RBAC for real: the manifests' ServiceAccounts, roles and admission policy applied to the real API
// server, and every component run with a token of its own ServiceAccount (TokenRequest API). The
// VM lifecycle works with exactly those rights, the network component reads the cluster's Service
// ranges; a host agent is refused on another host's Host and VMs; the API component cannot read
// Secrets outside its keys namespace.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SECRET } from "../../apiserver/api.ts";
import { CONFIG_MAP } from "../../apiserver/session-revocations.ts";
import { type Network, Resources, type VirtualMachine } from "../../crds/index.ts";
import { ApiError, KubeClient, type ResourceType } from "../../runtime/client.ts";
import { kubeConfigFrom } from "../../runtime/config.ts";
import { applyManifests, TestIdentities } from "./identities.ts";
import { type StratusProcess, startOperator, startStratusProcess } from "./processes.ts";
import { serveTinyImage, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const COMPONENTS = ["compute", "network", "storage", "fabric"];
const suffix = randomBytes(3).toString("hex");
const ZONE = `lp-zone-${suffix}`;
const [NODE_A, NODE_B] = [`lp-a-${suffix}`, `lp-b-${suffix}`];

describe("least privilege, with the manifests' own identities", () => {
  let admin: KubeClient;
  let workDir: string;
  let namespace: string;
  let agentA: KubeClient;
  let identities: TestIdentities;
  const processes: StratusProcess[] = [];

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    admin = new KubeClient(controlPlane.kubeConfig);
    workDir = await mkdtemp(join(tmpdir(), "stratus-lp-"));
    identities = new TestIdentities(admin, workDir);
    namespace = await useNamespace(controlPlane.kubeConfig, "lp");
    await applyManifests();
    const { url, checksum } = await serveTinyImage();
    await admin.create(Resources.zones, { metadata: { name: ZONE }, spec: {} });
    await admin.create(Resources.serviceOfferings, {
      metadata: { name: `lp-small-${suffix}` },
      spec: { cpu: 1, memory: "64Mi" },
    });
    await admin.create(Resources.templates, {
      metadata: { name: `lp-tiny-${suffix}` },
      spec: { source: { url }, checksum },
    });
    for (const component of COMPONENTS)
      processes.push(
        await startOperator({
          kubeconfigPath: await identities.serviceAccount(`stratus-${component}`),
          identity: `lp-${component}-${suffix}`,
          args: [`--components=${component}`],
        }),
      );
    const kubeconfigA = await identities.hostAgent(NODE_A);
    agentA = new KubeClient(kubeConfigFrom(kubeconfigA));
    processes.push(
      await startStratusProcess({
        script: "host-agent/main.ts",
        kubeconfigPath: kubeconfigA,
        identity: NODE_A,
        args: [
          `--host-name=${NODE_A}`,
          `--zone=${ZONE}`,
          "--libvirt-uri=test:///default",
          "--heartbeat-interval=1",
          `--pool-path=${join(workDir, "pool")}`,
          `--cache-dir=${join(workDir, "cache")}`,
          `--console-dir=${join(workDir, "console")}`,
          `--fence-dir=${join(workDir, "fence")}`,
        ],
      }),
    );
  });

  afterAll(async () => {
    for (const p of processes) await p.stop("SIGKILL");
    await identities?.cleanup();
    await agentA?.close();
    await admin?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("runs a VM's whole life with each component's own rights", async () => {
    await admin.create(Resources.virtualMachines, {
      metadata: { name: "vm1", namespace },
      spec: { zone: ZONE, serviceOffering: `lp-small-${suffix}`, template: `lp-tiny-${suffix}` },
    });
    const running = await waitFor(
      "vm1 Running",
      async () => {
        const vm = await admin.get<VirtualMachine>(Resources.virtualMachines, "vm1", namespace);
        return vm.status?.state === "Running" ? vm : undefined;
      },
      { timeoutMs: 90_000 },
    ).catch(async (error: Error) => {
      throw new Error(
        `${error.message}\n${processes.map((p) => `--- ${p.identity}\n${p.logs().slice(-1500)}`).join("\n")}`,
      );
    });
    expect(running.status?.host).toBe(NODE_A);
    await admin.delete(Resources.virtualMachines, "vm1", namespace);
    await waitFor("vm1 gone", async () =>
      admin.get(Resources.virtualMachines, "vm1", namespace).then(
        () => false,
        () => true,
      ),
    );
  });

  it("keeps a network off the cluster's Service range with the network component's own rights", async () => {
    // The component reads the cluster's ServiceCIDRs: without its role's get/list/watch on them
    // it would not start, let alone refuse this.
    await admin.create(Resources.networks, {
      metadata: { name: "shadow", namespace },
      spec: { zone: ZONE, cidr: "10.0.0.0/24" },
    });
    const ready = await waitFor("the network refused", async () => {
      const network = await admin.get<Network>(Resources.networks, "shadow", namespace);
      return network.status?.conditions?.find((c) => c.type === "Ready");
    });
    expect(ready).toMatchObject({ status: "False", reason: "CidrReserved" });
  });

  it("refuses a host agent another host's Host and VMs", async () => {
    await admin.create(Resources.hosts, { metadata: { name: NODE_B }, spec: { zone: ZONE } });
    // Its role lets it write Host status; the admission policy lets it write only its own.
    const refusal = (await agentA
      .mergePatch(Resources.hosts, NODE_B, undefined, { status: { agentVersion: "forged" } }, "status")
      .catch((error: unknown) => error)) as ApiError;
    expect(refusal).toBeInstanceOf(ApiError);
    expect(refusal.status).toBe(403);
    expect(refusal.message).toContain("a host agent may change only its own Host");

    await admin.create(Resources.virtualMachines, {
      metadata: { name: "elsewhere", namespace },
      spec: {
        zone: `lp-nowhere-${suffix}`,
        serviceOffering: `lp-small-${suffix}`,
        template: `lp-tiny-${suffix}`,
      },
    });
    /** Binds the object to NODE_B as the administrator, then tries `patch` on it as agent A. */
    const forgedOnB = async (type: ResourceType, name: string, patch: unknown, subresource?: "status") => {
      await admin.mergePatch(type, name, namespace, { status: { host: NODE_B } }, "status");
      return (await agentA
        .mergePatch(type, name, namespace, patch, subresource)
        .catch((error: unknown) => error)) as ApiError;
    };
    const vmRefusal = await forgedOnB(Resources.virtualMachines, "elsewhere", {
      metadata: { finalizers: ["host.stratus.io/x"] },
    });
    expect(vmRefusal.status).toBe(403);
    expect(vmRefusal.message).toContain("a host agent may change only the VMs and volumes bound to its host");
    // Nor another host's snapshots (its role lets it write their status and finalizer).
    await admin.create(Resources.volumeSnapshots, {
      metadata: { name: "elsewhere-snap", namespace },
      spec: { volume: "elsewhere-root" },
    });
    const snapshotRefusal = await forgedOnB(
      Resources.volumeSnapshots,
      "elsewhere-snap",
      { status: { phase: "Ready" } },
      "status",
    );
    expect(snapshotRefusal.status).toBe(403);
    expect(snapshotRefusal.message).toContain("(and their snapshots)");
    await admin.mergePatch(Resources.volumeSnapshots, "elsewhere-snap", namespace, {
      metadata: { finalizers: [] },
    });
    // A template's image: once, naming its own host; never another host's, never rewritten.
    const template = `lp-golden-${suffix}`;
    await admin.create(Resources.templates, {
      metadata: { name: template },
      spec: { source: { volume: { namespace, name: "elsewhere-root" } } },
    });
    const image = (host: string) => ({
      status: { image: { zone: ZONE, host, path: "/s/t.qcow2", sha256: "d".repeat(64), bytes: 1 } },
    });
    const forgedImage = (await agentA
      .mergePatch(Resources.templates, template, undefined, image(NODE_B), "status")
      .catch((error: unknown) => error)) as ApiError;
    expect(forgedImage.status).toBe(403);
    expect(forgedImage.message).toContain("a template's image only once, naming its own host");
    await agentA.mergePatch(Resources.templates, template, undefined, image(NODE_A), "status");
    const rewritten = (await agentA
      .mergePatch(Resources.templates, template, undefined, { status: { image: { bytes: 2 } } }, "status")
      .catch((error: unknown) => error)) as ApiError;
    expect(rewritten.status).toBe(403);
    await admin.delete(Resources.templates, template);
    // A template's image in a zone: reported only by the host storage chose there.
    const downloaded = `lp-url-${suffix}`;
    await admin.create(Resources.templates, {
      metadata: { name: downloaded },
      spec: { source: { url: "http://images.example/t.qcow2" } },
    });
    const choose = (host: string) =>
      admin.mergePatch(
        Resources.templates,
        downloaded,
        undefined,
        { status: { zones: [{ zone: ZONE, host }] } },
        "status",
      );
    const reportDownload = (host: string) =>
      agentA.mergePatch(
        Resources.templates,
        downloaded,
        undefined,
        { status: { zones: [{ zone: ZONE, host, state: "Downloading", bytes: 1 }] } },
        "status",
      );
    await choose(NODE_B);
    const forgedReport = (await reportDownload(NODE_B).catch((error: unknown) => error)) as ApiError;
    expect(forgedReport.status).toBe(403);
    expect(forgedReport.message).toContain("a template's image only in a zone where storage chose its host");
    expect(((await reportDownload(NODE_A).catch((error: unknown) => error)) as ApiError).status).toBe(403);
    await choose(NODE_A);
    await reportDownload(NODE_A);
    await admin.delete(Resources.templates, downloaded);
    // Nor report on migrations between other hosts, nor rename the hosts of its own.
    await admin.create(Resources.virtualMachineMigrations, {
      metadata: { name: "elsewhere-move", namespace },
      spec: { vm: "elsewhere" },
    });
    const hosts = (sourceHost: string) => ({
      status: { sourceHost, targetHost: NODE_B, phase: "Scheduling" },
    });
    await admin.mergePatch(
      Resources.virtualMachineMigrations,
      "elsewhere-move",
      namespace,
      hosts(NODE_B),
      "status",
    );
    const report = { status: { transfer: { state: "Completed" } } };
    const migrationRefusal = (await agentA
      .mergePatch(Resources.virtualMachineMigrations, "elsewhere-move", namespace, report, "status")
      .catch((error: unknown) => error)) as ApiError;
    expect(migrationRefusal.status).toBe(403);
    expect(migrationRefusal.message).toContain(
      "a host agent may report only on migrations from or to its host",
    );
    await admin.mergePatch(
      Resources.virtualMachineMigrations,
      "elsewhere-move",
      namespace,
      hosts(NODE_A),
      "status",
    );
    await agentA.mergePatch(
      Resources.virtualMachineMigrations,
      "elsewhere-move",
      namespace,
      report,
      "status",
    );
    const renamed = (await agentA
      .mergePatch(
        Resources.virtualMachineMigrations,
        "elsewhere-move",
        namespace,
        hosts(`${NODE_A}x`),
        "status",
      )
      .catch((error: unknown) => error)) as ApiError;
    expect(renamed.status).toBe(403);
    await admin.mergePatch(Resources.virtualMachineMigrations, "elsewhere-move", namespace, {
      metadata: { finalizers: [] },
    });
    await admin.delete(Resources.virtualMachineMigrations, "elsewhere-move", namespace);
    // Its own Host it may change.
    await agentA.mergePatch(
      Resources.hosts,
      NODE_A,
      undefined,
      { status: { agentVersion: "0.1.0" } },
      "status",
    );
  });

  it("keeps the API component out of every Secret but its keys", async () => {
    const api = new KubeClient(kubeConfigFrom(await identities.serviceAccount("stratus-apiserver")));
    const denied = (await api
      .list(SECRET, { namespace: "stratus-system" })
      .catch((error: unknown) => error)) as ApiError;
    expect(denied.status).toBe(403);
    expect((await api.list(SECRET, { namespace: "stratus-api-keys" })).items).toBeDefined();
    // Revoked sessions: ConfigMaps in the keys namespace only.
    expect((await api.list(CONFIG_MAP, { namespace: "stratus-api-keys" })).items).toBeDefined();
    const elsewhere = (await api
      .list(CONFIG_MAP, { namespace: "stratus-system" })
      .catch((error: unknown) => error)) as ApiError;
    expect(elsewhere.status).toBe(403);
    await api.close();
  });
});

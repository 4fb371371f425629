// Two control planes, each with an operator and a host agent, on the same real libvirt daemon, the
// agents even using the same host name (a re-installed control plane on an existing host): each
// one's guests keep running through the other's start-up, restarts and teardown. A domain whose VM
// vanished without its finalizer running (a control plane restored from an old backup) is stopped,
// never removed: its definition and disks stay, and an Event on the Host says so.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import { installCustomResourceDefinitions } from "../../crds/install.ts";
import { LocalControlPlane } from "../../devcluster/controlplane.ts";
import { canRunQemu, ensureLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { domainName } from "../../host-agent/domain-xml.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import { EVENT } from "../../runtime/events.ts";
import { type StratusProcess, startOperator, startStratusProcess } from "./processes.ts";
import { serveTinyGuest, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const run = promisify(execFile);
const virsh = async (...args: string[]) =>
  (await run("virsh", ["-c", "qemu:///system", ...args])).stdout.trim();
const domainState = (uid: string) => virsh("domstate", domainName(uid)).catch(() => "absent");

interface Cloud {
  label: string;
  controlPlane: LocalControlPlane;
  kubeconfigPath: string;
  client: KubeClient;
  namespace: string;
  workDir: string;
  operator?: StratusProcess;
  agent?: StratusProcess;
}

describe.skipIf(!canRunQemu())(
  "two control planes on one libvirt daemon (needs root and libvirt/QEMU)",
  () => {
    const suffix = randomBytes(3).toString("hex");
    // The same host name in both clusters: only the cluster's identity tells their domains apart.
    const host = `shared-${suffix}`;
    const subnets = [0, 1].map(
      (i) => `10.${100 + Math.floor(Math.random() * 100)}.${2 * Math.floor(Math.random() * 120) + i}`,
    );
    const clouds: Cloud[] = [];
    let ownControlPlane: LocalControlPlane | undefined;
    let tinyGuest: Awaited<ReturnType<typeof serveTinyGuest>>;

    const startAgent = async (cloud: Cloud) => {
      cloud.agent = await startStratusProcess({
        script: "host-agent/main.ts",
        kubeconfigPath: cloud.kubeconfigPath,
        identity: `${cloud.label}-${host}`,
        args: [
          `--host-name=${host}`,
          "--zone=shared",
          "--libvirt-uri=qemu:///system",
          `--lease-namespace=${cloud.namespace}`,
          `--pool-path=${join(cloud.workDir, "pool")}`,
          `--cache-dir=${join(cloud.workDir, "cache")}`,
          `--console-dir=${join(cloud.workDir, "console")}`,
          `--fence-dir=${join(cloud.workDir, "fence")}`,
          "--shutdown-grace=3",
        ],
      });
    };
    const restartAgent = async (cloud: Cloud) => {
      await cloud.agent?.stop("SIGKILL");
      await startAgent(cloud);
    };

    const setUp = async (cloud: Cloud, subnet: string) => {
      const { client, namespace } = cloud;
      await mkdir(cloud.workDir, { recursive: true, mode: 0o755 });
      await client.apply(
        Resources.serviceOfferings,
        { metadata: { name: `shared-${suffix}` }, spec: { cpu: 1, memory: "128Mi" } },
        { fieldManager: "test" },
      );
      await client.apply(
        Resources.templates,
        {
          metadata: { name: `shared-tiny-${suffix}` },
          spec: { source: tinyGuest },
        },
        { fieldManager: "test" },
      );
      await client.create(Resources.networks, {
        metadata: { name: "net", namespace },
        spec: { zone: "shared", cidr: `${subnet}.0/24` },
      });
      cloud.operator = await startOperator({
        kubeconfigPath: cloud.kubeconfigPath,
        identity: `${cloud.label}-operator-${suffix}`,
        args: [`--lease-namespace=${namespace}`],
      });
      await startAgent(cloud);
    };

    const createVm = async (cloud: Cloud, name: string, extra: Partial<VirtualMachine["spec"]> = {}) => {
      await cloud.client.create(Resources.virtualMachines, {
        metadata: { name, namespace: cloud.namespace },
        spec: {
          zone: "shared",
          serviceOffering: `shared-${suffix}`,
          template: `shared-tiny-${suffix}`,
          nics: [{ name: "eth0", network: "net" }],
          ...extra,
        },
      });
      const vm = await waitFor(
        `${cloud.label}/${name} to run`,
        async () => {
          const current = await cloud.client.get<VirtualMachine>(
            Resources.virtualMachines,
            name,
            cloud.namespace,
          );
          return current.status?.state === "Running" ? current : undefined;
        },
        { timeoutMs: 120_000 },
      );
      return vm.metadata.uid as string;
    };

    beforeAll(async () => {
      await ensureLibvirtDaemons();
      tinyGuest = await serveTinyGuest();

      const shared = await sharedControlPlane();
      ownControlPlane = await LocalControlPlane.start();
      await installCustomResourceDefinitions(ownControlPlane.kubeConfig);
      for (const [label, controlPlane] of [
        ["a", shared],
        ["b", ownControlPlane],
      ] as const) {
        clouds.push({
          label,
          controlPlane,
          kubeconfigPath: controlPlane.kubeconfigPath,
          client: new KubeClient(controlPlane.kubeConfig),
          namespace: await useNamespace(controlPlane.kubeConfig, `shared-${label}`),
          workDir: `/var/lib/stratus/shared-${label}-${suffix}`,
        });
      }
    }, 300_000);

    afterAll(async () => {
      for (const cloud of clouds) {
        await cloud.agent?.stop("SIGKILL");
        await cloud.operator?.stop("SIGKILL");
        await cloud.client.close();
        await rm(cloud.workDir, { recursive: true, force: true });
      }
      await ownControlPlane?.stop();
      // Whatever a failed run left behind on the shared daemon.
      for (const name of (await virsh("list", "--all", "--name")).split("\n")) {
        if (!name.startsWith("stratus-") || !(await virsh("dumpxml", name)).includes(host)) continue;
        await virsh("destroy", name).catch(() => undefined);
        await virsh("undefine", name).catch(() => undefined);
      }
    }, 120_000);

    it("keeps each cluster's guests running through the other's start-up, restarts, orphan handling and teardown", async () => {
      const [a, b] = clouds as [Cloud, Cloud];
      await setUp(a, subnets[0] as string);
      const a1 = await createVm(a, "a1");

      // Cluster B starts on the same daemon with the same host name: A's guest is not its own.
      await setUp(b, subnets[1] as string);
      const b1 = await createVm(b, "b1");
      const b2 = await createVm(b, "b2", { rootDisk: { size: "1Gi" } });
      expect(await domainState(a1)).toBe("running");

      await restartAgent(b);
      await restartAgent(a);
      await waitFor(
        "both agents to be back",
        async () =>
          (await b.agent?.get("/readyz"))?.status === 200 && (await a.agent?.get("/readyz"))?.status === 200,
      );
      for (const uid of [a1, b1, b2]) expect(await domainState(uid)).toBe("running");

      // B's control plane loses b2 without its agent cleaning up (an old backup restored): the
      // agent stops the guest at start-up and keeps its definition and disk.
      await b.agent?.stop("SIGKILL");
      const b2Vm = await b.client.get<VirtualMachine>(Resources.virtualMachines, "b2", b.namespace);
      const b2Disk = join(b.workDir, "pool", `root-${b2}`);
      expect(existsSync(b2Disk)).toBe(true);
      await b.client.mergePatch(Resources.virtualMachines, "b2", b.namespace, {
        metadata: { finalizers: null },
      });
      await b.client.delete(Resources.virtualMachines, "b2", b.namespace);
      await startAgent(b);
      await waitFor("b2's domain to be stopped", async () => (await domainState(b2)) === "shut off", {
        timeoutMs: 60_000,
      });
      expect(existsSync(b2Disk)).toBe(true);
      // The agent stops the guest first and then says so: wait for the Event, do not race it.
      await waitFor("the OrphanedDomainStopped Event on B's Host", async () => {
        const events = await b.client.list<{ reason?: string; note?: string } & KubeObject>(EVENT, {
          namespace: "default",
        });
        return events.items.some(
          (e) => e.reason === "OrphanedDomainStopped" && e.note?.includes(b2Vm.metadata.uid as string),
        );
      });
      expect(await domainState(a1)).toBe("running");
      expect(await domainState(b1)).toBe("running");

      // B's host taken out of service: its domains go, A's guest keeps running.
      await b.agent?.stop("SIGTERM");
      const { stdout } = await run(process.execPath, [
        "host-agent/main.ts",
        "--teardown",
        `--host-name=${host}`,
        `--kubeconfig=${b.kubeconfigPath}`,
        "--libvirt-uri=qemu:///system",
        "--shutdown-grace=3",
      ]);
      expect(stdout).toMatch(/removed 2 domain\(s\)/);
      expect(stdout).toMatch(/left \d+ domain\(s\) of other agents alone/);
      expect(await domainState(b1)).toBe("absent");
      expect(await domainState(b2)).toBe("absent");
      expect(await domainState(a1)).toBe("running");

      // A's own life goes on: its VM is deleted cleanly, leaving nothing of A's on the daemon.
      await a.client.delete(Resources.virtualMachines, "a1", a.namespace);
      await waitFor("a1's domain to go", async () => (await domainState(a1)) === "absent", {
        timeoutMs: 60_000,
      });
    }, 600_000);
  },
);

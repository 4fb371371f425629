// HA between two real hypervisors on this machine (two-hypervisors.ts): an HA guest writes a word
// to its data disk on the shared pool (vda: the tiny template boots a kernel, no root disk); its agent is frozen with SIGSTOP. The watchdog, a process
// of its own, destroys the real QEMU domain before the Lease expires; the VM starts on the other
// hypervisor only after that (both daemons asked every 200 ms), and the guest reads its word back
// there. The disk was never open twice: no start was refused by QEMU's image lock. The woken agent
// reports the fencing and leaves the guest it lost alone. Needs root and libvirt/QEMU.
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type StoragePool, type VirtualMachine } from "../../crds/index.ts";
import { canRunQemu } from "../../devcluster/libvirt.ts";
import { domainName } from "../../host-agent/domain-xml.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import { EVENT } from "../../runtime/events.ts";
import { readConsoleUntil, typeOnConsole } from "./guest-console.ts";
import { type StratusProcess, startOperator } from "./processes.ts";
import { serveTinyGuest, sharedControlPlane, useNamespace, waitFor } from "./support.ts";
import { startTwoHypervisorHosts, type TwoHypervisorHosts, virshOn } from "./two-hypervisors.ts";

/** Seconds: the agents' Lease and the operator's grace past it. */
const LEASE = 6;
const GRACE = 2;

describe.skipIf(!canRunQemu())(
  "HA failover between two real hypervisors (needs root and libvirt/QEMU)",
  () => {
    const suffix = randomBytes(3).toString("hex");
    const zone = `haq-${suffix}`;
    const names: [string, string] = [`haqa-${suffix}`, `haqb-${suffix}`];
    const workDir = `/var/lib/stratus/ha-qemu-${suffix}`;
    let client: KubeClient;
    let namespace: string;
    let operator: StratusProcess | undefined;
    let cloud: TwoHypervisorHosts | undefined;

    const getVm = (name: string) => client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
    const hostNamed = (name: string) =>
      cloud?.hosts.find((h) => h.name === name) as TwoHypervisorHosts["hosts"][0];
    /** The hosts whose daemon runs the VM's domain now. */
    const runningOn = async (vm: VirtualMachine) => {
      const found: string[] = [];
      for (const host of cloud?.hosts ?? []) {
        const listed = await virshOn(host.uri, "list", "--name", "--state-running");
        if (listed.split("\n").includes(domainName(vm.metadata.uid as string))) found.push(host.name);
      }
      return found;
    };
    const eventsOf = async (ns: string, name: string) =>
      (
        await client.list<{ reason?: string; note?: string; regarding?: { name?: string } } & KubeObject>(
          EVENT,
          {
            namespace: ns,
          },
        )
      ).items.filter((e) => e.regarding?.name === name);

    beforeAll(async () => {
      const tinyGuest = await serveTinyGuest();
      const controlPlane = await sharedControlPlane();
      client = new KubeClient(controlPlane.kubeConfig);
      namespace = await useNamespace(controlPlane.kubeConfig, "haq");
      await client.create(Resources.zones, { metadata: { name: zone }, spec: {} });
      await client.create(Resources.serviceOfferings, {
        metadata: { name: `haq-${suffix}` },
        spec: { cpu: 1, memory: "128Mi", storageType: "shared", highAvailability: true },
      });
      await client.create(Resources.templates, {
        metadata: { name: `tiny-${suffix}` },
        spec: { source: tinyGuest },
      });
      operator = await startOperator({
        kubeconfigPath: controlPlane.kubeconfigPath,
        identity: `haq-operator-${suffix}`,
        args: [`--lease-namespace=${namespace}`, `--host-grace=${GRACE}`],
      });
      cloud = await startTwoHypervisorHosts({
        kubeconfigPath: controlPlane.kubeconfigPath,
        names,
        zone,
        leaseNamespace: namespace,
        workDir,
        agentArgs: () => [`--lease-duration=${LEASE}`],
      });
      await client.create(Resources.storagePools, {
        metadata: { name: `shared-${suffix}` },
        spec: { zone, type: "sharedMountPoint", path: cloud.sharedDir },
      });
      await waitFor("the shared pool ready on both hosts", async () => {
        const pool = await client.get<StoragePool>(Resources.storagePools, `shared-${suffix}`);
        return pool.status?.hosts?.ready === 2 ? pool : undefined;
      });
    }, 300_000);

    afterAll(async () => {
      for (const host of cloud?.hosts ?? []) host.agent.child.kill("SIGCONT");
      await cloud?.stop();
      await operator?.stop("SIGKILL");
      await client?.close();
      await rm(workDir, { recursive: true, force: true });
    });

    it("fences the frozen host's guest, restarts it on the other hypervisor with its disk, and never runs it twice", async () => {
      await client.create(Resources.volumes, {
        metadata: { name: "haq-data", namespace },
        spec: { zone, size: "1Gi" },
      });
      await client.create(Resources.virtualMachines, {
        metadata: { name: "haq", namespace },
        spec: {
          zone,
          serviceOffering: `haq-${suffix}`,
          template: `tiny-${suffix}`,
          dataVolumes: [{ name: "data", volume: "haq-data" }],
        },
      });
      const vm = await waitFor(
        "the HA VM Running",
        async () => {
          const current = await getVm("haq");
          return current.status?.state === "Running" ? current : undefined;
        },
        { timeoutMs: 180_000 },
      );
      const lost = hostNamed(vm.status?.host as string);
      const survivor = cloud?.hosts.find((h) => h !== lost) as TwoHypervisorHosts["hosts"][0];
      const word = `ha${suffix}`;
      const before = lost.consoleSocket(vm.metadata.uid as string);
      await readConsoleUntil(before, /stratus-guest: disk vda serial=data/);
      await typeOnConsole(before, `stratus-write vda ${word}`);
      await readConsoleUntil(
        before,
        new RegExp(`stratus-guest: disk vda serial=\\S* sectors=\\d+ head=${word}`),
      );
      expect(await runningOn(vm)).toEqual([lost.name]);

      const frozenAt = Date.now();
      lost.agent.child.kill("SIGSTOP");
      const twice: string[][] = [];
      let fencedAfter: number | undefined;
      const restarted = await waitFor(
        `the VM Running on ${survivor.name}`,
        async () => {
          const where = await runningOn(vm);
          if (where.length > 1) twice.push(where);
          if (fencedAfter === undefined && !where.includes(lost.name))
            fencedAfter = (Date.now() - frozenAt) / 1000;
          const current = await getVm("haq");
          return current.status?.failover?.restartedOn === survivor.name && where.includes(survivor.name)
            ? current
            : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 200 },
      );
      const restartedAfter = (Date.now() - frozenAt) / 1000;
      console.log(
        `real QEMU: fenced ${fencedAfter?.toFixed(1)} s and running on the other hypervisor ${restartedAfter.toFixed(1)} s after the freeze`,
      );
      expect(twice).toEqual([]);
      // The watchdog destroyed the guest before the fabric could release it (the Lease plus the
      // grace after the last renewal; seen here through virsh, polled every 200 ms).
      expect(fencedAfter).toBeLessThan(LEASE + GRACE);
      expect(fencedAfter).toBeLessThan(restartedAfter);
      expect(restartedAfter).toBeLessThan(120);
      // The guest reads its word back on the other hypervisor: the same disk, not a copy.
      const after = survivor.consoleSocket(vm.metadata.uid as string);
      await readConsoleUntil(
        after,
        new RegExp(`stratus-guest: disk vda serial=\\S* sectors=\\d+ head=${word}`),
      );
      // No start was refused for a disk another QEMU still held.
      const reasons = (await eventsOf(namespace, "haq")).map((e) => `${e.reason}: ${e.note}`);
      expect(reasons.filter((r) => /lock/i.test(r))).toEqual([]);
      expect(reasons.some((r) => r.startsWith("Restarted:"))).toBe(true);
      expect(restarted.status?.failover?.from).toBe(lost.name);

      // Woken, the frozen agent says it was fenced and leaves the guest it lost alone.
      lost.agent.child.kill("SIGCONT");
      await waitFor("the Fenced Event on the woken host", async () =>
        (await eventsOf("default", lost.name)).some(
          (e) => e.reason === "Fenced" && e.note?.includes("powered off 1 HA guest"),
        ),
      );
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(await runningOn(vm)).toEqual([survivor.name]);
    }, 300_000);
  },
);

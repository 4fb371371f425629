// Live migration between two real hypervisors on this machine (two-hypervisors.ts): the machine's
// libvirtd and a second one in a mount namespace of its own, a host agent on each, sharing a
// sharedMountPoint pool. A tiny guest moves while it runs: it answers on its serial console before
// and after, was never rebooted, its console follows it to the target host, and afterwards exactly
// one domain runs. Needs root and the libvirt/QEMU Debian packages (.ci/run installs them).
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  Resources,
  type StoragePool,
  type VirtualMachine,
  type VirtualMachineMigration,
} from "../../crds/index.ts";
import { canRunQemu } from "../../devcluster/libvirt.ts";
import { domainName } from "../../host-agent/domain-xml.ts";
import { KubeClient } from "../../runtime/client.ts";
import { readConsoleUntil, typeOnConsole } from "./guest-console.ts";
import { type StratusProcess, startOperator } from "./processes.ts";
import { serveTinyGuest, sharedControlPlane, useNamespace, waitFor } from "./support.ts";
import { startTwoHypervisorHosts, type TwoHypervisorHosts, virshOn } from "./two-hypervisors.ts";

describe.skipIf(!canRunQemu())(
  "live migration between two real hypervisors (needs root and libvirt/QEMU)",
  () => {
    const suffix = randomBytes(3).toString("hex");
    const zone = `lm-${suffix}`;
    const names: [string, string] = [`lma-${suffix}`, `lmb-${suffix}`];
    const workDir = `/var/lib/stratus/live-migration-${suffix}`;
    let client: KubeClient;
    let namespace: string;
    let operator: StratusProcess | undefined;
    let cloud: TwoHypervisorHosts | undefined;

    const getVm = (name: string) => client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
    const getMigration = (name: string) =>
      client.get<VirtualMachineMigration>(Resources.virtualMachineMigrations, name, namespace);
    const hostOf = (name: string) =>
      cloud?.hosts.find((h) => h.name === name) as TwoHypervisorHosts["hosts"][0];
    /** Where the VM's domain runs, per daemon. */
    const runningDomains = async (vm: VirtualMachine) => {
      const found: string[] = [];
      for (const host of cloud?.hosts ?? []) {
        const listed = await virshOn(host.uri, "list", "--name");
        if (listed.split("\n").includes(domainName(vm.metadata.uid as string))) found.push(host.name);
      }
      return found;
    };

    beforeAll(async () => {
      const tinyGuest = await serveTinyGuest();
      const controlPlane = await sharedControlPlane();
      client = new KubeClient(controlPlane.kubeConfig);
      namespace = await useNamespace(controlPlane.kubeConfig, "lm");
      await client.create(Resources.zones, { metadata: { name: zone }, spec: {} });
      await client.create(Resources.serviceOfferings, {
        metadata: { name: `lm-${suffix}` },
        spec: { cpu: 1, memory: "128Mi", storageType: "shared" },
      });
      await client.create(Resources.templates, {
        metadata: { name: `tiny-${suffix}` },
        spec: { source: tinyGuest },
      });
      operator = await startOperator({
        kubeconfigPath: controlPlane.kubeconfigPath,
        identity: `lm-operator-${suffix}`,
        args: [`--lease-namespace=${namespace}`, "--max-migrations-per-host=1"],
      });
      cloud = await startTwoHypervisorHosts({
        kubeconfigPath: controlPlane.kubeconfigPath,
        names,
        zone,
        leaseNamespace: namespace,
        workDir,
        // Both daemons are on this machine: each agent's own URI is how the other reaches it.
        agentArgs: ({ uri }) => [`--migration-uri=${uri}`, "--migration-address=127.0.0.1"],
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

    afterEach((context) => {
      if (context.task.result?.state === "fail") {
        for (const host of cloud?.hosts ?? [])
          process.stderr.write(`agent ${host.name} log:\n${host.agent.logs().slice(-8000)}\n`);
        process.stderr.write(`operator log:\n${operator?.logs().slice(-6000)}\n`);
      }
    });

    afterAll(async () => {
      await client?.delete(Resources.virtualMachines, "mover", namespace).catch(() => undefined);
      await waitFor("the test's VMs gone", async () => {
        const vms = await client.list<VirtualMachine>(Resources.virtualMachines, { namespace });
        return vms.items.length === 0;
      }).catch(() => undefined);
      await cloud?.stop();
      await operator?.stop("SIGKILL");
      await client?.delete(Resources.storagePools, `shared-${suffix}`).catch(() => undefined);
      await client?.delete(Resources.zones, zone).catch(() => undefined);
      await client?.close();
      await rm(workDir, { recursive: true, force: true });
    });

    it("moves a running guest to the other hypervisor: it keeps running, its console follows, one domain runs", async () => {
      await client.create(Resources.virtualMachines, {
        metadata: { name: "mover", namespace },
        spec: {
          zone,
          serviceOffering: `lm-${suffix}`,
          template: `tiny-${suffix}`,
          rootDisk: { size: "1Gi" },
        },
      });
      const vm = await waitFor(
        "the VM Running",
        async () => {
          const v = await getVm("mover");
          return v.status?.state === "Running" ? v : undefined;
        },
        { timeoutMs: 180_000 },
      );
      const from = vm.status?.host as string;
      const to = names.find((n) => n !== from) as string;
      const before = hostOf(from).consoleSocket(vm.metadata.uid as string);
      await readConsoleUntil(before, /stratus-guest: disk vda/);
      await typeOnConsole(before, `stratus-write vda before${suffix}`);
      await readConsoleUntil(before, new RegExp(`head=before${suffix}`));

      await client.create(Resources.virtualMachineMigrations, {
        metadata: { name: "move-1", namespace },
        spec: { vm: "mover", targetHost: to },
      });
      const seen = new Set<string>();
      let percent = 0;
      const done = await waitFor(
        "the migration Succeeded",
        async () => {
          const m = await getMigration("move-1");
          seen.add(m.status?.phase ?? "none");
          percent = Math.max(percent, m.status?.transfer?.percent ?? 0);
          if (m.status?.phase === "Failed") throw new Error(`migration failed: ${m.status.message}`);
          return m.status?.phase === "Succeeded" ? m : undefined;
        },
        { timeoutMs: 180_000, intervalMs: 200 },
      );
      expect(done.status).toMatchObject({
        sourceHost: from,
        targetHost: to,
        transfer: { state: "Completed" },
      });
      expect(seen.has("Running")).toBe(true);
      process.stdout.write(
        `live migration: ${done.status?.transfer?.durationMilliseconds} ms, ${done.status?.transfer?.totalBytes} bytes, phases ${[...seen].join(",")}\n`,
      );

      const moved = await waitFor("the VM Running on the target", async () => {
        const v = await getVm("mover");
        return v.status?.host === to && v.status.state === "Running" ? v : undefined;
      });
      expect(moved.status?.domainUUID).toBe(vm.status?.domainUUID);
      expect(await runningDomains(moved)).toEqual([to]);
      // The same guest, not a new boot: it answers on the target's console and its disk holds the word.
      const after = hostOf(to).consoleSocket(vm.metadata.uid as string);
      await typeOnConsole(after, `stratus-write vda after${suffix}`);
      await readConsoleUntil(after, new RegExp(`head=after${suffix}`));
      // The agent that received it made it its own, and the agent that sent it holds nothing of it.
      const owned = await virshOn(hostOf(to).uri, "dumpxml", domainName(vm.metadata.uid as string));
      expect(owned).toMatch(new RegExp(`host=.${to}.`));
      expect(await virshOn(hostOf(from).uri, "list", "--all", "--name")).not.toContain(
        vm.metadata.uid as string,
      );
      // The VM keeps running there: later syncs of both agents start nothing twice.
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      expect(await runningDomains(moved)).toEqual([to]);
    }, 400_000);
  },
);

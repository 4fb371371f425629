// Live migration between two real hypervisors on this machine (two-hypervisors.ts): the machine's
// libvirtd and a second one in a mount namespace of its own, a host agent on each (with its own
// node-bound identity under the manifests' RBAC and admission policy), sharing a sharedMountPoint pool. A tiny guest moves while it runs: it answers on its serial console before
// and after, was never rebooted, its console follows it to the target host, and afterwards exactly
// one domain runs. Needs root and the libvirt/QEMU Debian packages (.ci/run installs them).
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm } from "node:fs/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SECRET } from "../../apiserver/api.ts";
import { USER_DATA_KEY } from "../../apiserver/user-data.ts";
import { openConsole } from "../../cli/console.ts";
import {
  type Host,
  type Network,
  Resources,
  type StoragePool,
  type VirtualMachine,
  type VirtualMachineMigration,
  type Volume,
} from "../../crds/index.ts";
import { canRunQemu } from "../../devcluster/libvirt.ts";
import { readConfigDrive } from "../../host-agent/config-drive.ts";
import { configDriveIn, domainName } from "../../host-agent/domain-xml.ts";
import { bridgeName } from "../../host-agent/network-xml.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import { writeConsoleKeys } from "../../runtime/console-ticket.ts";
import { EVENT } from "../../runtime/events.ts";
import { type Account, adminAndUser, cs } from "./cloudstack-accounts.ts";
import { readConsoleUntil, recordConsole, typeOnConsole } from "./guest-console.ts";
import { applyManifests, TestIdentities } from "./identities.ts";
import { type StratusProcess, startApiServer, startOperator } from "./processes.ts";
import {
  agentOwner,
  readWebConsoleUntil,
  serveTinyGuest,
  sharedControlPlane,
  useNamespace,
  waitFor,
} from "./support.ts";
import {
  pingAcrossMove,
  startTwoHypervisorHosts,
  type TwoHypervisorHosts,
  virshOn,
} from "./two-hypervisors.ts";

describe.skipIf(!canRunQemu())(
  "live migration between two real hypervisors (needs root and libvirt/QEMU)",
  () => {
    const suffix = randomBytes(3).toString("hex");
    const zone = `lm-${suffix}`;
    const names: [string, string] = [`lma-${suffix}`, `lmb-${suffix}`];
    const workDir = `/var/lib/stratus/live-migration-${suffix}`;
    let client: KubeClient;
    let namespace: string;
    let leaseNamespace: string;
    let admin: Account;
    let user: Account;
    let endpoint: string;
    let operator: StratusProcess | undefined;
    let cloud: TwoHypervisorHosts | undefined;
    let identities: TestIdentities | undefined;

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

    const MOVER_USER_DATA = "#cloud-config\nhostname: mover\n";

    /** Where the guest is and in what state, per daemon, and the end of what its QEMU said there. */
    async function whereTheGuestIs(vm: VirtualMachine, logChars = 600): Promise<string> {
      const domain = domainName(vm.metadata.uid as string);
      const lines: string[] = [];
      for (const [host, logDir] of [
        [cloud?.hosts[0], "/var/log/libvirt/qemu"],
        [cloud?.hosts[1], `${cloud?.second.dir}/log/qemu`],
      ] as const) {
        if (!host) continue;
        const state = await virshOn(host.uri, "domstate", "--reason", domain).catch((e: Error) => e.message);
        const qemuLog = await readFile(`${logDir}/${domain}.log`, "utf8").catch((e: Error) => e.message);
        lines.push(`domain on ${host.name}: ${state.trim()}; QEMU log ends:\n${qemuLog.slice(-logChars)}`);
        // Where a running guest's CPU is, twice a second apart (a spinning guest moves, a halted one
        // waits for an interrupt), and its interrupt controllers.
        if (state.startsWith("running"))
          for (const command of ["info registers", "info registers", "info lapic", "info pic"]) {
            const out = await virshOn(host.uri, "qemu-monitor-command", "--hmp", domain, command).catch(
              (e: Error) => e.message,
            );
            lines.push(`${command} on ${host.name}:\n${out.split("\n").slice(0, 12).join("\n")}`);
            await new Promise((resolve) => setTimeout(resolve, 500));
          }
      }
      return lines.join("\n");
    }

    /** The guest pinged from the target's network through the move (two-hypervisors.ts). */
    async function pingThroughMove(from: string, to: string, address: string) {
      const network = await client.get<Network>(Resources.networks, "lm-net", namespace);
      const bridge = async (host: string) =>
        bridgeName(await agentOwner(client, host), network.metadata.uid as string);
      return pingAcrossMove({
        second: cloud?.second as TwoHypervisorHosts["second"],
        source: { host: hostOf(from), bridge: await bridge(from) },
        target: { host: hostOf(to), bridge: await bridge(to) },
        address,
        linkName: `lm${suffix}`,
      });
    }

    beforeAll(async () => {
      const tinyGuest = await serveTinyGuest();
      const controlPlane = await sharedControlPlane();
      client = new KubeClient(controlPlane.kubeConfig);
      leaseNamespace = await useNamespace(controlPlane.kubeConfig, "lm");
      const keysNamespace = await useNamespace(controlPlane.kubeConfig, "lmkeys");
      // The manifests' own administrator role (CloudStack's migrate commands are root admin's).
      ({ admin, user } = await adminAndUser(client, { keysNamespace, suffix, prefix: "lm" }));
      // The VM is the admin's: CloudStack's admin migrates VMs of every account.
      namespace = admin.namespace;
      // With the aggregated API: the console through the API server asks the VM's current host.
      await mkdir(workDir, { recursive: true, mode: 0o755 });
      const consoleKeys = await writeConsoleKeys(workDir);
      endpoint = (
        await startApiServer({
          kubeconfigPath: controlPlane.kubeconfigPath,
          client,
          identity: `lm-api-${suffix}`,
          keysNamespace,
          subresources: { namespace: leaseNamespace, workDir, consoleKeyFile: consoleKeys.privateKeyFile },
        })
      ).endpoint;
      await client.create(Resources.zones, { metadata: { name: zone }, spec: {} });
      await client.create(Resources.serviceOfferings, {
        metadata: { name: `lm-${suffix}` },
        spec: { cpu: 1, memory: "128Mi", storageType: "shared" },
      });
      // A random subnet: the machine's own networks (other tests') must not overlap it.
      await client.create(Resources.networks, {
        metadata: { name: "lm-net", namespace },
        spec: {
          zone,
          cidr: `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}.0/24`,
        },
      });
      await client.create(Resources.templates, {
        metadata: { name: `tiny-${suffix}` },
        spec: { source: tinyGuest },
      });
      operator = await startOperator({
        kubeconfigPath: controlPlane.kubeconfigPath,
        identity: `lm-operator-${suffix}`,
        args: [`--lease-namespace=${leaseNamespace}`, "--max-migrations-per-host=1"],
      });
      // Each agent with its own node-bound identity under the manifests' RBAC and admission policy:
      // the migration reports and the guest's disk following it go through what admission allows.
      await applyManifests();
      const agentIdentities = new TestIdentities(client, workDir);
      identities = agentIdentities;
      cloud = await startTwoHypervisorHosts({
        kubeconfigPath: controlPlane.kubeconfigPath,
        kubeconfigFor: (host) => agentIdentities.hostAgent(host, { leaseNamespace }),
        names,
        zone,
        leaseNamespace,
        workDir,
        // Each daemon's bridges in a network namespace of its own: both hosts carry the VM's subnet.
        separateNetworks: true,
        // Both daemons are on this machine: each agent's own URI is how the other reaches it.
        // A cap of 16 MiB/s: a 128 MiB guest takes seconds to move, so a cancel has time to land.
        agentArgs: ({ uri, migrationAddress }) => [
          `--migration-uri=${uri}`,
          `--migration-address=${migrationAddress}`,
          "--migration-bandwidth=16",
          "--console-address=127.0.0.1:0",
          `--console-key-file=${consoleKeys.publicKeyFile}`,
        ],
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

    afterEach(async (context) => {
      if (context.task.result?.state !== "fail") return;
      for (const host of cloud?.hosts ?? [])
        process.stderr.write(`agent ${host.name} log:\n${host.agent.logs().slice(-8000)}\n`);
      process.stderr.write(`operator log:\n${operator?.logs().slice(-6000)}\n`);
      const vm = await getVm("mover").catch(() => undefined);
      if (vm) process.stderr.write(`${await whereTheGuestIs(vm, 3000)}\n`);
    });

    afterAll(async () => {
      await client?.delete(Resources.virtualMachines, "mover", namespace).catch(() => undefined);
      await waitFor("the test's VMs gone", async () => {
        const vms = await client.list<VirtualMachine>(Resources.virtualMachines, { namespace });
        return vms.items.length === 0;
      }).catch(() => undefined);
      await cloud?.stop();
      await operator?.stop("SIGKILL");
      await identities?.cleanup();
      await client?.delete(Resources.storagePools, `shared-${suffix}`).catch(() => undefined);
      await client?.delete(Resources.zones, zone).catch(() => undefined);
      await client?.close();
      await rm(workDir, { recursive: true, force: true });
    });

    it("moves a running guest to the other hypervisor: it keeps running, its console follows, one domain runs", async () => {
      // User data, so the guest has a config drive: a file of its host, built anew on the target.
      await client.create(SECRET, {
        metadata: { name: "mover-userdata", namespace },
        data: { [USER_DATA_KEY]: Buffer.from(MOVER_USER_DATA).toString("base64") },
      });
      await client.create(Resources.virtualMachines, {
        metadata: { name: "mover", namespace },
        spec: {
          zone,
          serviceOffering: `lm-${suffix}`,
          template: `tiny-${suffix}`,
          rootDisk: { size: "1Gi" },
          nics: [{ name: "eth0", network: "lm-net" }],
          userDataSecret: "mover-userdata",
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
      // Its address, by DHCP from its host's network, answers there (busybox: this machine has no ping).
      const address = vm.status?.nics?.[0]?.ipAddress as string;
      await readConsoleUntil(before, new RegExp(`stratus-guest: ip: ${address.replaceAll(".", "\\.")}/24`));
      await hostOf(from).inNetwork("busybox", "ping", "-c", "2", "-W", "2", address);

      // What the guest prints on the target from its first instant there (a panic would show only here).
      const arrival = recordConsole(hostOf(to).consoleSocket(vm.metadata.uid as string));
      await client.create(Resources.virtualMachineMigrations, {
        metadata: { name: "move-1", namespace },
        spec: { vm: "mover", targetHost: to },
      });
      // Pings from the target's network all through the move, once the two hosts' bridges are one
      // segment (as a VLAN between real hosts makes them).
      const probe = pingThroughMove(from, to, address).catch((error: unknown) => ({
        sent: 0,
        received: 0,
        error: String(error),
      }));
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
      const pings = await probe;
      process.stdout.write(`ping through the move: ${JSON.stringify(pings)}\n`);
      expect(pings.sent).toBeGreaterThan(100);
      const printedThere = arrival.stop();
      // Unanswered only while the guest was paused (10 pings a second): a KVM guest for the switch,
      // an emulated one for the whole copy (movesLive in libvirt-hypervisor.ts).
      const pausedMs = done.status?.transfer?.downtimeMilliseconds ?? 0;
      expect(pausedMs).toBeGreaterThanOrEqual(0);
      expect(
        pings.sent - pings.received,
        `${await whereTheGuestIs(vm)}\nthe guest's console on ${to} from its arrival:\n${printedThere.slice(-4000)}`,
      ).toBeLessThanOrEqual(Math.ceil(pausedMs / 100) + 10);
      process.stdout.write(
        `live migration: ${done.status?.transfer?.durationMilliseconds} ms, ${done.status?.transfer?.totalBytes} bytes, guest paused ${done.status?.transfer?.downtimeMilliseconds} ms, phases ${[...seen].join(",")}\n`,
      );

      const moved = await waitFor("the VM Running on the target", async () => {
        const v = await getVm("mover");
        return v.status?.host === to && v.status.state === "Running" ? v : undefined;
      });
      expect(moved.status?.domainUUID).toBe(vm.status?.domainUUID);
      // Its disk in the shared pool went with it: storage released it to the target, which took it.
      await waitFor("the root disk held by the target", async () => {
        const root = await client.get<Volume>(Resources.volumes, "mover-root", namespace);
        return root.status?.host === to && root.status.releasedTo === to;
      });
      // It kept its address, and answers at it on the target host's network.
      expect(moved.status?.nics?.[0]?.ipAddress).toBe(address);
      await waitFor("the guest answering ping on the target's network", () =>
        hostOf(to)
          .inNetwork("busybox", "ping", "-c", "1", "-W", "1", address)
          .then(
            () => true,
            () => false,
          ),
      );
      expect(await runningDomains(moved)).toEqual([to]);
      // The same guest, not a new boot: it answers on the target's console and its disk holds the word.
      const after = hostOf(to).consoleSocket(vm.metadata.uid as string);
      await typeOnConsole(after, `stratus-write vda after${suffix}`);
      await readConsoleUntil(after, new RegExp(`head=after${suffix}`));
      // Its console through the API server (aggregator, API component, the agent of its host now).
      const viaApi = await openConsole((await sharedControlPlane()).kubeConfig, namespace, "mover");
      expect(await readWebConsoleUntil(viaApi, `head=after${suffix}`, 30_000)).toContain(
        `head=after${suffix}`,
      );
      // The agent that received it made it its own, and the agent that sent it holds nothing of it.
      const owned = await virshOn(hostOf(to).uri, "dumpxml", domainName(vm.metadata.uid as string));
      expect(owned).toMatch(new RegExp(`host=.${to}.`));
      // Its config drive is the target's own, built there with the user data the API component
      // let the target's agent read while the move was under way.
      const drive = configDriveIn(owned) as string;
      expect(drive).toContain(`/${to}/`);
      expect((await readConfigDrive(drive)).files.get("openstack/latest/user_data")).toBe(MOVER_USER_DATA);
      expect(await virshOn(hostOf(from).uri, "list", "--all", "--name")).not.toContain(
        vm.metadata.uid as string,
      );
      // The VM keeps running there: later syncs of both agents start nothing twice.
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      expect(await runningDomains(moved)).toEqual([to]);
    }, 400_000);

    /** The guest answers on the console of the host it runs on now: a word written to its disk reads back. */
    async function answers(host: string, vm: VirtualMachine, word: string): Promise<void> {
      const socket = hostOf(host).consoleSocket(vm.metadata.uid as string);
      await typeOnConsole(socket, `stratus-write vda ${word}`);
      await readConsoleUntil(socket, new RegExp(`head=${word}`)).catch(async (error: Error) => {
        throw new Error(`${error.message}\n${await whereTheGuestIs(vm)}`);
      });
    }

    it("deleting a running migration cancels it: the guest runs on where it was, once", async () => {
      const vm = await getVm("mover");
      const from = vm.status?.host as string;
      await client.create(Resources.virtualMachineMigrations, {
        metadata: { name: "cancel-1", namespace },
        spec: { vm: "mover" },
      });
      await waitFor(
        "the migration transferring",
        async () => {
          const m = await getMigration("cancel-1");
          return m.status?.transfer?.state === "Running" && (m.status.transfer.processedBytes ?? 0) > 0;
        },
        { timeoutMs: 120_000, intervalMs: 100 },
      );
      await client.delete(Resources.virtualMachineMigrations, "cancel-1", namespace);
      let last: VirtualMachineMigration | undefined;
      await waitFor(
        "the cancelled migration gone",
        async () => {
          const m = await getMigration("cancel-1").catch(() => undefined);
          if (m) last = m;
          return m === undefined;
        },
        { timeoutMs: 120_000, intervalMs: 100 },
      );
      // Gone only once the agent said Cancelled (compute lets go then, and records it on the VM).
      expect(["Running", "Cancelled"]).toContain(last?.status?.transfer?.state);
      await waitFor("the MigrationCancelled Event on the VM", async () => {
        const events = await client.list<{ reason?: string; regarding?: { name?: string } } & KubeObject>(
          EVENT,
          {
            namespace,
          },
        );
        return events.items.some((e) => e.regarding?.name === "mover" && e.reason === "MigrationCancelled");
      });
      const stayed = await getVm("mover");
      expect(stayed.status).toMatchObject({ host: from, state: "Running" });
      expect(await runningDomains(stayed)).toEqual([from]);
      await answers(from, stayed, `cancel${suffix}`);
    }, 300_000);

    it("a source agent killed mid-transfer: the migration ends, says how, and the guest runs exactly once", async () => {
      const vm = await getVm("mover");
      const from = vm.status?.host as string;
      const to = names.find((n) => n !== from) as string;
      await client.create(Resources.virtualMachineMigrations, {
        metadata: { name: "killed-1", namespace },
        spec: { vm: "mover" },
      });
      await waitFor(
        "the migration transferring",
        async () => {
          const m = await getMigration("killed-1");
          return m.status?.transfer?.state === "Running" && (m.status.transfer.processedBytes ?? 0) > 0;
        },
        { timeoutMs: 120_000, intervalMs: 100 },
      );
      await hostOf(from).restartAgent("SIGKILL");
      const ended = await waitFor(
        "the migration over",
        async () => {
          const m = await getMigration("killed-1");
          return m.status?.phase === "Failed" || m.status?.phase === "Succeeded" ? m : undefined;
        },
        { timeoutMs: 180_000, intervalMs: 200 },
      );
      process.stdout.write(`agent killed mid-transfer: ${ended.status?.phase}: ${ended.status?.message}\n`);
      const where = ended.status?.phase === "Succeeded" ? to : from;
      const now = await waitFor("the VM Running", async () => {
        const v = await getVm("mover");
        return v.status?.host === where && v.status.state === "Running" ? v : undefined;
      });
      expect(await runningDomains(now)).toEqual([where]);
      await answers(where, now, `killed${suffix}`);
    }, 400_000);

    it("CloudStack's findHostsForMigration and migrateVirtualMachine move it back; another account's user gets an unknown id", async () => {
      const vm = await getVm("mover");
      const from = vm.status?.host as string;
      const to = names.find((n) => n !== from) as string;
      const found = await cs(endpoint, admin, "findHostsForMigration", {
        virtualmachineid: vm.metadata.uid as string,
      });
      expect(found.stderr).toBe("");
      const hosts = found.json.host as { name: string; suitableformigration: boolean }[];
      expect(hosts).toEqual([
        expect.objectContaining({ name: to, suitableformigration: true, requiresStorageMotion: false }),
      ]);
      const refused = await cs(endpoint, user, "migrateVirtualMachine", {
        virtualmachineid: vm.metadata.uid as string,
      });
      // cs prints CloudStack's error envelope (and exits 0). The VM is another account's: its id
      // answers as a made-up one (a user of the VM's own account without the rights gets 531).
      expect(refused.json.migratevirtualmachineresponse).toMatchObject({ errorcode: 431 });
      const toHost = await client.get<Host>(Resources.hosts, to);
      const started = Date.now();
      const moved = await cs(endpoint, admin, "migrateVirtualMachine", {
        virtualmachineid: vm.metadata.uid as string,
        hostid: toHost.metadata.uid as string,
      });
      expect(moved.stderr).toBe("");
      const result = moved.json.virtualmachine as { hostname?: string; hostid?: string; state: string };
      expect(result.state).toBe("Running");
      process.stdout.write(`migrateVirtualMachine job: ${Date.now() - started} ms\n`);
      const back = await getVm("mover");
      expect(back.status?.host).toBe(to);
      expect(await runningDomains(back)).toEqual([to]);
      await answers(to, back, `api${suffix}`);
    }, 300_000);

    it("maintenance moves a VM on shared storage live, and the guest runs on without a reboot", async () => {
      const vm = await getVm("mover");
      const from = vm.status?.host as string;
      const to = names.find((n) => n !== from) as string;
      await client.mergePatch(Resources.hosts, from, undefined, { spec: { maintenance: true } });
      const evacuation = await waitFor(
        "the maintenance migration Succeeded",
        async () => {
          const m = await getMigration(`evacuate-${vm.metadata.uid}`).catch(() => undefined);
          if (m?.status?.phase === "Failed")
            throw new Error(`maintenance migration failed: ${m.status.message}`);
          return m?.status?.phase === "Succeeded" ? m : undefined;
        },
        { timeoutMs: 180_000, intervalMs: 500 },
      );
      expect(evacuation.status).toMatchObject({ sourceHost: from, targetHost: to });
      const moved = await waitFor("the VM Running on the other host", async () => {
        const v = await getVm("mover");
        return v.status?.host === to && v.status.state === "Running" ? v : undefined;
      });
      // Moved live: the same domain, never stopped (no evacuation), and the guest answers.
      expect(moved.status?.domainUUID).toBe(vm.status?.domainUUID);
      // Its disk in the shared pool went with it: storage released it to the target, which took it.
      await waitFor("the root disk held by the target", async () => {
        const root = await client.get<Volume>(Resources.volumes, "mover-root", namespace);
        return root.status?.host === to && root.status.releasedTo === to;
      });
      expect(moved.status?.evacuatedFrom).toBeUndefined();
      expect(await runningDomains(moved)).toEqual([to]);
      await answers(to, moved, `maint${suffix}`);
      await waitFor(
        "the host in Maintenance",
        async () => {
          const h = await client.get<Host>(Resources.hosts, from);
          return h.status?.resourceState === "Maintenance";
        },
        { timeoutMs: 60_000 },
      );
      await client.mergePatch(Resources.hosts, from, undefined, { spec: { maintenance: false } });
      // The finished maintenance migration goes with the maintenance.
      await waitFor(
        "the maintenance migration removed",
        async () => (await getMigration(`evacuate-${vm.metadata.uid}`).catch(() => undefined)) === undefined,
      );
    }, 300_000);
  },
);

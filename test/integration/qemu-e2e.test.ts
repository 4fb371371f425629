// End to end on real QEMU (software emulation; no KVM here): a host agent on qemu:///system boots
// the tiny guest from its template with a data volume on a Network. The guest gets exactly its
// address by DHCP, sees its data disk, stops and starts with the same address, survives an agent
// SIGKILL without a restart, and leaves no domain, disk or bridge behind when deleted.
// Needs root and the libvirt/QEMU Debian packages (.ci/run installs them); the daemons are started
// here when they are not running.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { type AddressInfo, connect, createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openConsole } from "../../cli/console.ts";
import { type Network, Resources, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { canRunQemu, ensureLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { bridgeName, libvirtNetworkName } from "../../host-agent/network-xml.ts";
import { vlanLinkName } from "../../host-agent/vlan.ts";
import type { KubeClient, KubeObject } from "../../runtime/client.ts";
import { sleep } from "../../runtime/time.ts";
import { readConsoleUntil, typeOnConsole } from "./guest-console.ts";
import type { ApiServerProcess, StratusProcess } from "./processes.ts";
import {
  guestCatalog,
  printAgentLogOnFailure,
  removeAgentLibvirtObjects,
  startGuestControlPlane,
  startQemuHostAgent,
} from "./qemu-agent.ts";
import {
  agentOwner,
  readWebConsoleUntil,
  serveTinyGuest,
  sharedControlPlane,
  waitFor,
  waitUntilGone,
} from "./support.ts";

const run = promisify(execFile);
const virsh = async (...args: string[]) => (await run("virsh", ["-c", "qemu:///system", ...args])).stdout;

describe.skipIf(!canRunQemu())(
  "a real QEMU guest through the host agent (needs root and libvirt/QEMU)",
  () => {
    const suffix = randomBytes(3).toString("hex");
    const host = `qemu-${suffix}`;
    const subnet = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}`;
    const address = `${subnet}.42`;
    const vlan = 100 + Math.floor(Math.random() * 3900);
    // A veth pair stands in for the host's physical uplink (this kernel has no dummy interfaces).
    const uplink = `stup${suffix}`;
    const workDir = `/var/lib/stratus/e2e-${suffix}`;
    let client: KubeClient;
    let namespace: string;
    let kubeconfigPath: string;
    let agent: StratusProcess;
    let operator: StratusProcess;
    let api: ApiServerProcess;

    const getVm = () => client.get<VirtualMachine>(Resources.virtualMachines, "guest", namespace);
    const startAgent = async (extraArgs: string[] = []) => {
      agent = await startQemuHostAgent({
        kubeconfigPath,
        host,
        zone: "e2e",
        leaseNamespace: namespace,
        workDir,
        args: [
          "--shutdown-grace=3",
          "--console-address=127.0.0.1:0",
          `--console-key-file=${join(workDir, "console-key.pub.pem")}`,
          ...extraArgs,
        ],
      });
    };
    const waitState = (state: string, timeoutMs = 90_000) =>
      waitFor(
        `the VM ${state}`,
        async () => {
          const vm = await getVm();
          return vm.status?.state === state ? vm : undefined;
        },
        { timeoutMs },
      );

    beforeAll(async () => {
      await ensureLibvirtDaemons();
      await run("ip", ["link", "add", uplink, "type", "veth", "peer", "name", `stuq${suffix}`]);
      await run("ip", ["link", "set", uplink, "up"]);
      await mkdir(workDir, { recursive: true, mode: 0o755 });
      const tinyGuest = await serveTinyGuest();

      ({ kubeconfigPath, client, namespace } = await guestCatalog({
        prefix: "e2e",
        suffix,
        zone: "e2e",
        memory: "128Mi",
        template: { source: tinyGuest },
        network: { name: "e2e-net", cidr: `${subnet}.0/24` },
      }));
      await client.create(Resources.volumes, {
        metadata: { name: "e2e-data", namespace },
        spec: { zone: "e2e", size: "1Gi" },
      });
      // The whole control plane: compute prepares the guest (root volume, address) and places it.
      ({ operator, api } = await startGuestControlPlane({
        kubeconfigPath,
        client,
        namespace,
        workDir,
        name: `e2e-${suffix}`,
      }));
      await startAgent();
    }, 300_000);

    printAgentLogOnFailure(() => agent);

    afterAll(async () => {
      await agent?.stop("SIGKILL");
      await operator?.stop("SIGKILL");
      await api?.process.stop("SIGKILL");
      // The pool the agent defined points into workDir: remove both, so the next run starts clean.
      await removeAgentLibvirtObjects(client, host);
      await client?.close();
      await rm(workDir, { recursive: true, force: true });
      await run("ip", ["link", "delete", uplink]).catch(() => undefined);
    });

    it("boots the guest with exactly its address and its data disk; stops, starts, survives an agent crash; leaves nothing behind", async () => {
      await client.create(Resources.virtualMachines, {
        metadata: { name: "guest", namespace },
        spec: {
          zone: "e2e",
          serviceOffering: `e2e-${suffix}`,
          template: `e2e-${suffix}`,
          nics: [{ name: "eth0", network: "e2e-net", ipAddress: address }],
          dataVolumes: [{ name: "data", volume: "e2e-data" }],
        },
      });
      const vm = await waitState("Running");
      const uid = vm.metadata.uid as string;
      const mac = vm.status?.nics?.[0]?.macAddress as string;
      expect(vm.status?.nics?.[0]).toMatchObject({ name: "eth0", ipAddress: address });
      const consoleSocket = join(workDir, "console", `${uid}.sock`);

      // The guest sees its data disk (serial = the slot name) and gets its address by DHCP.
      expect(
        await readConsoleUntil(consoleSocket, /stratus-guest: disk vda serial=data sectors=2097152/),
      ).toBeTruthy();
      expect(
        await readConsoleUntil(
          consoleSocket,
          new RegExp(`stratus-guest: ip: ${address.replaceAll(".", "\\.")}/24`),
        ),
      ).toBeTruthy();
      const network = (await client.get<KubeObject>(Resources.networks, "e2e-net", namespace)).metadata
        .uid as string;
      const leases = await virsh(
        "net-dhcp-leases",
        libvirtNetworkName(await agentOwner(client, host), network),
      );
      expect(leases).toMatch(new RegExp(`${mac}\\s+ipv4\\s+${address.replaceAll(".", "\\.")}/24`));

      // The host guard: from the guest, its gateway (an address of the host) answers DNS (dnsmasq,
      // port 53) and nothing else, not even a service the host runs on every address.
      const hostService = createServer((socket) => socket.end());
      await new Promise<void>((resolve) => hostService.listen(0, "0.0.0.0", resolve));
      try {
        const port = (hostService.address() as AddressInfo).port;
        const gateway = `${subnet}.1`;
        const probe = async (target: number) => {
          await typeOnConsole(consoleSocket, `stratus-probe ${gateway} ${target}`);
          const seen = await readConsoleUntil(
            consoleSocket,
            new RegExp(`stratus-guest: probe ${gateway.replaceAll(".", "\\.")}:${target} (open|closed)`),
          );
          return seen.endsWith("open") ? "open" : "closed";
        };
        expect(await probe(53)).toBe("open");
        expect(await probe(port)).toBe("closed");
        // The same service answers from the host's own namespace: the guard, not the service, refused.
        await new Promise<void>((resolve, reject) => {
          const socket = connect(port, gateway, () => {
            socket.destroy();
            resolve();
          }).once("error", reject);
        });
      } finally {
        hostService.close();
      }

      // The console through the Kubernetes API server (aggregator → API component → agent), as
      // `stratus console` opens it; a user without virtualmachines/console is refused.
      const controlPlane = await sharedControlPlane();
      const viaApi = await openConsole(controlPlane.kubeConfig, namespace, "guest");
      const relayed = await readWebConsoleUntil(viaApi, `stratus-guest: ip: ${address}/24`, 30_000);
      expect(relayed).toContain(`stratus-guest: ip: ${address}/24`);
      // `stratus console` from a terminal: the guest's output, then Ctrl-] leaves cleanly.
      const terminal = spawn(
        process.execPath,
        ["cli/stratus.ts", "console", "guest", "-n", namespace, "--kubeconfig", kubeconfigPath],
        {
          stdio: ["pipe", "pipe", "pipe"],
        },
      );
      let printed = "";
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`stratus console printed: ${printed}`)), 30_000);
        terminal.stdout.on("data", (chunk: Buffer) => {
          printed += chunk.toString("latin1");
          if (/stratus-guest: /.test(printed)) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      terminal.stdin.write(Buffer.from([0x1d]));
      expect(await new Promise((resolve) => terminal.once("exit", resolve))).toBe(0);
      const nobody = await controlPlane.issueIdentity(`nobody-${suffix}`);
      await expect(openConsole(nobody.kubeConfig, namespace, "guest")).rejects.toMatchObject({ status: 403 });

      // Hot plug: a second volume appears in the running guest, grows there, and goes again.
      await client.create(Resources.volumes, {
        metadata: { name: "e2e-extra", namespace },
        spec: { zone: "e2e", size: "1Gi" },
      });
      await client.mergePatch(Resources.virtualMachines, "guest", namespace, {
        spec: {
          dataVolumes: [
            { name: "data", volume: "e2e-data" },
            { name: "extra", volume: "e2e-extra" },
          ],
        },
      });
      expect(
        await readConsoleUntil(consoleSocket, /stratus-guest: disk vdb serial=extra sectors=2097152/),
      ).toBeTruthy();
      await client.mergePatch(Resources.volumes, "e2e-extra", namespace, { spec: { size: "2Gi" } });
      expect(
        await readConsoleUntil(consoleSocket, /stratus-guest: disk vdb serial=extra sectors=4194304/),
      ).toBeTruthy();
      const extra = await waitFor("the grown volume's status", async () => {
        const v = await client.get<Volume>(Resources.volumes, "e2e-extra", namespace);
        return v.status?.capacity === "2Gi" && v.status.attachedTo?.device === "vdb" ? v : undefined;
      });
      expect(extra.status?.phase).toBe("Attached");
      await client.mergePatch(Resources.virtualMachines, "guest", namespace, {
        spec: { dataVolumes: [{ name: "data", volume: "e2e-data" }] },
      });
      expect(await readConsoleUntil(consoleSocket, /stratus-guest: disks: vda \r?\n/)).toBeTruthy();
      await waitFor(
        "the extra volume to be detached",
        async () =>
          (await client.get<Volume>(Resources.volumes, "e2e-extra", namespace)).status?.phase === "Ready",
      );
      await client.delete(Resources.volumes, "e2e-extra", namespace);
      await waitUntilGone(client, Resources.volumes, "e2e-extra", namespace);

      // RerunOnFailure: a guest that powers itself off stays off; Always starts it again.
      await client.mergePatch(Resources.virtualMachines, "guest", namespace, {
        spec: { runStrategy: "RerunOnFailure" },
      });
      await waitFor("the agent to report the new generation", async () => {
        const current = await getVm();
        return current.status?.conditions?.some(
          (c) =>
            c.type === "Ready" && c.status === "True" && c.observedGeneration === current.metadata.generation,
        );
      });
      // The serial console serves one client at a time: a line typed while the relay above still
      // holds it can be lost, so it is typed again; a restarted guest (a new domain id) is a failure.
      const idBeforePoweroff = (await virsh("domid", `stratus-${uid}`)).trim();
      let stopped: VirtualMachine | undefined;
      for (let attempt = 1; !stopped; attempt++) {
        await typeOnConsole(consoleSocket, "stratus-poweroff");
        stopped = await waitState("Stopped", 30_000).catch(async (error: Error) => {
          const id = (await virsh("domid", `stratus-${uid}`).catch(() => "")).trim();
          if (id && id !== "-" && id !== idBeforePoweroff)
            throw new Error(
              `the agent restarted the guest after it powered itself off (domain id ${idBeforePoweroff} -> ${id})`,
            );
          if (attempt >= 3) throw error;
          return undefined;
        });
      }
      expect(stopped.status?.conditions?.find((c) => c.type === "Ready")?.reason).toBe("GuestShutdown");
      expect((await virsh("domstate", "--reason", `stratus-${uid}`)).trim()).toBe("shut off (shutdown)");
      await sleep(5_000); // a restart would follow the stop event within a second
      expect((await virsh("domstate", `stratus-${uid}`)).trim()).toBe("shut off");
      await client.mergePatch(Resources.virtualMachines, "guest", namespace, {
        spec: { runStrategy: "Always" },
      });
      await waitState("Running");

      // The libvirt daemon dies: the VM is Unknown with the reason; back when the daemon is, and
      // the guest (QEMU outlives libvirtd) was never restarted.
      const idBeforeDaemonLoss = (await virsh("domid", `stratus-${uid}`)).trim();
      await run("pkill", ["-x", "libvirtd"]);
      const unknown = await waitState("Unknown", 60_000);
      expect(unknown.status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
        reason: "HypervisorError",
        message: expect.stringContaining("libvirt"),
      });
      await ensureLibvirtDaemons();
      await waitState("Running", 60_000);
      expect((await virsh("domid", `stratus-${uid}`)).trim()).toBe(idBeforeDaemonLoss);

      // Halted: ACPI is ignored by this guest, so after the grace period the domain is destroyed.
      await client.mergePatch(Resources.virtualMachines, "guest", namespace, {
        spec: { runStrategy: "Halted" },
      });
      await waitState("Stopped");
      expect((await virsh("domstate", `stratus-${uid}`)).trim()).toBe("shut off");
      await client.mergePatch(Resources.virtualMachines, "guest", namespace, {
        spec: { runStrategy: "Always" },
      });
      await waitState("Running");
      expect(
        await readConsoleUntil(
          consoleSocket,
          new RegExp(`stratus-guest: ip: ${address.replaceAll(".", "\\.")}/24`),
        ),
      ).toBeTruthy();

      // SIGKILL the agent while the guest runs: the new agent adopts the domain without a restart.
      const domainId = (await virsh("domid", `stratus-${uid}`)).trim();
      await agent.stop("SIGKILL");
      await startAgent();
      await waitFor("the new agent to report the VM", async () => {
        const current = await getVm();
        return (
          current.status?.state === "Running" &&
          current.status.conditions?.some((c) => c.type === "Ready" && c.status === "True")
        );
      });
      expect((await virsh("domid", `stratus-${uid}`)).trim()).toBe(domainId);

      // Delete: no domain, no bridge; the data volume's disk goes with the Volume.
      const volume = await client.get<Volume>(Resources.volumes, "e2e-data", namespace);
      expect(volume.status?.path && existsSync(volume.status.path)).toBe(true);
      await client.delete(Resources.virtualMachines, "guest", namespace);
      await waitUntilGone(client, Resources.virtualMachines, "guest", namespace);
      expect(await virsh("list", "--all", "--name")).not.toContain(uid);
      const links = (await run("ip", ["-o", "link", "show"])).stdout;
      expect(links).not.toContain(bridgeName(await agentOwner(client, host), network));
      await client.delete(Resources.volumes, "e2e-data", namespace);
      await waitUntilGone(client, Resources.volumes, "e2e-data", namespace);
      expect(existsSync(volume.status?.path as string)).toBe(false);
    }, 600_000);

    // 802.1Q needs the kernel's 8021q module; some kernels (this sandbox's among them) lack it.
    // Where it exists the network's bridge gets a real VLAN link on the uplink; where it does not,
    // the VM says so in its Ready condition. Either way nothing is left behind.
    it("tags a VLAN network's bridge on the uplink, or says why it cannot", async () => {
      // One agent per libvirt daemon: restart it with an uplink for VLAN-tagged traffic.
      await agent.stop("SIGTERM");
      await startAgent([`--vlan-uplink=${uplink}`]);
      const vlanNetwork = await client.create<Network>(Resources.networks, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "Network",
        metadata: { name: "e2e-vlan", namespace },
        spec: { zone: "e2e", cidr: `${subnet.replace(/\.\d+$/, ".251")}.0/24`, vlan },
      });
      const networkUid = vlanNetwork.metadata.uid as string;
      const kernelHasVlans = await run("ip", [
        "link",
        "add",
        "link",
        uplink,
        "name",
        `stpr${suffix}`,
        "type",
        "vlan",
        "id",
        "7",
      ]).then(
        async () => {
          await run("ip", ["link", "delete", `stpr${suffix}`]);
          return true;
        },
        () => false,
      );
      await client.create(Resources.virtualMachines, {
        metadata: { name: "tagged", namespace },
        spec: {
          zone: "e2e",
          serviceOffering: `e2e-${suffix}`,
          template: `e2e-${suffix}`,
          nics: [{ name: "eth0", network: "e2e-vlan" }],
        },
      });
      const getTagged = () => client.get<VirtualMachine>(Resources.virtualMachines, "tagged", namespace);
      if (kernelHasVlans) {
        await waitFor("the tagged VM to run", async () => (await getTagged()).status?.state === "Running");
        const [link] = JSON.parse(
          (
            await run("ip", [
              "-j",
              "-d",
              "link",
              "show",
              vlanLinkName(bridgeName(await agentOwner(client, host), networkUid)),
            ])
          ).stdout,
        );
        expect(link).toMatchObject({
          link: uplink,
          master: bridgeName(await agentOwner(client, host), networkUid),
          linkinfo: { info_kind: "vlan", info_data: { id: vlan } },
        });
      } else {
        const ready = await waitFor("the tagged VM to report the missing VLAN support", async () =>
          (await getTagged()).status?.conditions?.find(
            (c) => c.type === "Ready" && c.reason === "VlanSetupFailed",
          ),
        );
        expect(ready.message).toMatch(new RegExp(`ip link add link ${uplink} .* type vlan id ${vlan}: .+`));
      }
      await client.delete(Resources.virtualMachines, "tagged", namespace);
      await waitUntilGone(client, Resources.virtualMachines, "tagged", namespace);
      const links = (await run("ip", ["-o", "link", "show"])).stdout;
      expect(links).not.toContain(vlanLinkName(bridgeName(await agentOwner(client, host), networkUid)));
      expect(links).not.toContain(bridgeName(await agentOwner(client, host), networkUid));
    }, 300_000);
  },
);

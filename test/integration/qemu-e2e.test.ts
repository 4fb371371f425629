// End to end on real QEMU (software emulation; no KVM here): a host agent on qemu:///system boots
// the tiny guest from its template with a data volume on a Network. The guest gets exactly its
// address by DHCP, sees its data disk, stops and starts with the same address, survives an agent
// SIGKILL without a restart, and leaves no domain, disk or bridge behind when deleted.
// Needs root and the libvirt/QEMU Debian packages (.ci/run installs them); the daemons are started
// here when they are not running.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { bridgeName, libvirtNetworkName } from "../../host-agent/network-xml.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import { type StratusProcess, startStratusProcess } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor, waitUntilGone } from "./support.ts";

const run = promisify(execFile);
const virsh = async (...args: string[]) => (await run("virsh", ["-c", "qemu:///system", ...args])).stdout;

const isRoot = process.getuid?.() === 0;
const hasQemu = existsSync("/usr/sbin/libvirtd") && existsSync("/usr/bin/qemu-system-x86_64");

async function ensureLibvirtDaemons(): Promise<void> {
  if (
    await virsh("version").then(
      () => true,
      () => false,
    )
  )
    return;
  await run("virtlogd", ["-d"]).catch(() => undefined);
  await run("libvirtd", ["-d"]);
  await waitFor(
    "libvirtd to answer",
    () =>
      virsh("version").then(
        () => true,
        () => false,
      ),
    { timeoutMs: 30_000 },
  );
}

/** Reads the guest's serial console until `pattern` shows up. */
function readConsoleUntil(socket: string, pattern: RegExp, timeoutMs = 90_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = "";
    const connection = connect(socket);
    const timer = setTimeout(() => {
      connection.destroy();
      reject(new Error(`console never showed ${pattern}; it showed:\n${output.slice(-2000)}`));
    }, timeoutMs);
    connection.on("data", (chunk) => {
      output += chunk.toString("latin1");
      const match = pattern.exec(output);
      if (match) {
        clearTimeout(timer);
        connection.destroy();
        resolve(match[0]);
      }
    });
    connection.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

describe.skipIf(!(isRoot && hasQemu))(
  "a real QEMU guest through the host agent (needs root and libvirt/QEMU)",
  () => {
    const suffix = randomBytes(3).toString("hex");
    const host = `qemu-${suffix}`;
    const subnet = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}`;
    const address = `${subnet}.42`;
    const workDir = `/var/lib/stratus/e2e-${suffix}`;
    let client: KubeClient;
    let namespace: string;
    let kubeconfigPath: string;
    let server: Server;
    let agent: StratusProcess;

    const getVm = () => client.get<VirtualMachine>(Resources.virtualMachines, "guest", namespace);
    const startAgent = async () => {
      agent = await startStratusProcess({
        script: "host-agent/main.ts",
        kubeconfigPath,
        identity: host,
        args: [
          `--host-name=${host}`,
          "--zone=e2e",
          "--libvirt-uri=qemu:///system",
          `--lease-namespace=${namespace}`,
          `--pool-path=${join(workDir, "pool")}`,
          `--cache-dir=${join(workDir, "cache")}`,
          `--console-dir=${join(workDir, "console")}`,
          "--shutdown-grace=3",
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
      const guest = (await run("bash", ["test/images/build-tiny-guest.sh"])).stdout.trim();
      await mkdir(workDir, { recursive: true, mode: 0o755 });
      server = createServer(async (request, response) => {
        const file = { "/vmlinuz": "vmlinuz", "/initrd.gz": "initrd.gz" }[request.url ?? ""];
        if (file) response.end(await readFile(join(guest, file)));
        else response.writeHead(404).end();
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

      const controlPlane = await sharedControlPlane();
      kubeconfigPath = controlPlane.kubeconfigPath;
      client = new KubeClient(controlPlane.kubeConfig);
      namespace = await useNamespace(controlPlane.kubeConfig, "e2e");
      await client.create(Resources.serviceOfferings, {
        metadata: { name: `e2e-${suffix}` },
        spec: { cpu: 1, memory: "128Mi" },
      });
      await client.create(Resources.templates, {
        metadata: { name: `tiny-${suffix}` },
        spec: {
          source: {
            directBoot: {
              kernel: `${base}/vmlinuz`,
              initrd: `${base}/initrd.gz`,
              commandLine: "console=ttyS0",
            },
          },
        },
      });
      await client.create(Resources.networks, {
        metadata: { name: "e2e-net", namespace },
        spec: { zone: "e2e", cidr: `${subnet}.0/24` },
      });
      await client.create(Resources.volumes, {
        metadata: { name: "e2e-data", namespace },
        spec: { zone: "e2e", size: "1Gi" },
      });
      await startAgent();
    }, 300_000);

    afterAll(async () => {
      await agent?.stop("SIGKILL");
      server?.close();
      await client?.close();
      // The pool the agent defined points into workDir: remove both, so the next run starts clean.
      await virsh("pool-destroy", "stratus").catch(() => undefined);
      await virsh("pool-undefine", "stratus").catch(() => undefined);
      await rm(workDir, { recursive: true, force: true });
    });

    it("boots the guest with exactly its address and its data disk; stops, starts, survives an agent crash; leaves nothing behind", async () => {
      await client.create(Resources.virtualMachines, {
        metadata: { name: "guest", namespace },
        spec: {
          zone: "e2e",
          serviceOffering: `e2e-${suffix}`,
          template: `tiny-${suffix}`,
          placement: { host },
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
      const leases = await virsh("net-dhcp-leases", libvirtNetworkName(network));
      expect(leases).toMatch(new RegExp(`${mac}\\s+ipv4\\s+${address.replaceAll(".", "\\.")}/24`));

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
      expect(links).not.toContain(bridgeName(network));
      await client.delete(Resources.volumes, "e2e-data", namespace);
      await waitUntilGone(client, Resources.volumes, "e2e-data", namespace);
      expect(existsSync(volume.status?.path as string)).toBe(false);
    }, 600_000);
  },
);

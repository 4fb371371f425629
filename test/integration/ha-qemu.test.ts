// HA between two real hypervisors on this machine (two-hypervisors.ts): an HA guest writes a word
// to its data disk on the shared pool (vda: the tiny template boots a kernel, no root disk); its agent is frozen with SIGSTOP. The watchdog, a process
// of its own, destroys the real QEMU domain before the Lease expires; the VM starts on the other
// hypervisor only after that (both daemons asked every 200 ms), and the guest reads its word back
// there. The disk's lease (virtlockd) is held by the first daemon, then by the second; the disk was
// never open twice: no start was refused by a lease or QEMU's image lock. The woken agent
// reports the fencing and leaves the guest it lost alone. Needs root and libvirt/QEMU.
import { randomBytes } from "node:crypto";
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
      // The storage fence: the guest's disk holds a lease of its daemon's virtlockd, and the other
      // daemon cannot start a second guest on it. (QEMU's own image lock refuses first on one
      // kernel: libvirt takes leases just before the CPUs start, after QEMU opened its disks.)
      const disk = await diskSource(lost.uri, vm.metadata.uid as string, "vda");
      expect(await leaseHolders(disk.file)).toEqual([lockDaemonOf(lost.uri)]);
      const refused = await startCopyOfDisk(survivor.uri, disk);
      expect(refused).toMatch(/Lockspace resource '[^']+' is locked|Failed to get "write" lock/);

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
      // The lease moved with the guest: the fenced daemon's virtlockd let it go.
      expect(await leaseHolders(disk.file)).toEqual([lockDaemonOf(survivor.uri)]);
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

/** The file and format of the disk `target` of the guest `uid` on the daemon at `uri`. */
async function diskSource(
  uri: string,
  uid: string,
  target: string,
): Promise<{ file: string; format: string }> {
  const xml = await virshOn(uri, "dumpxml", domainName(uid));
  const disk = [...xml.matchAll(/<disk type='file' device='disk'>[\s\S]*?<\/disk>/g)]
    .map((m) => m[0])
    .find((d) => d.includes(`<target dev='${target}'`));
  const file = disk?.match(/<source file='([^']+)'/)?.[1];
  const format = disk?.match(/<driver name='qemu' type='([^']+)'/)?.[1];
  if (!file || !format) throw new Error(`no file disk ${target} in the domain:\n${xml}`);
  return { file, format };
}

/** The lock daemon of the machine's libvirtd, or of the second one (two-hypervisors.ts names it). */
const lockDaemonOf = (uri: string) => (uri === "qemu:///system" ? "virtlockd" : "virtlockd-hv2");

/** The processes (by name) holding a POSIX lock on the file: virtlockd's leases, as the kernel has them. */
async function leaseHolders(path: string): Promise<string[]> {
  const inode = (await stat(path)).ino;
  const holders: string[] = [];
  for (const line of (await readFile("/proc/locks", "utf8")).split("\n")) {
    const [, kind, , , pid, file] = line.trim().split(/\s+/);
    if (kind === "POSIX" && file?.endsWith(`:${inode}`))
      holders.push((await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "?")).trim());
  }
  return holders;
}

/**
 * Defines a throwaway domain on `uri` with the disk, starts it, and returns libvirt's refusal
 * (undefining the domain either way).
 */
async function startCopyOfDisk(uri: string, disk: { file: string; format: string }): Promise<string> {
  const name = `stratus-lockcheck-${randomBytes(4).toString("hex")}`;
  const file = join(tmpdir(), `${name}.xml`);
  await writeFile(
    file,
    `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os>` +
      `<devices><disk type='file' device='disk'><driver name='qemu' type='${disk.format}'/><source file='${disk.file}'/>` +
      `<target dev='vda' bus='virtio'/></disk></devices></domain>`,
  );
  await virshOn(uri, "define", file);
  try {
    await virshOn(uri, "start", name);
    await virshOn(uri, "destroy", name);
    return "started";
  } catch (error) {
    return (error as Error).message;
  } finally {
    await virshOn(uri, "undefine", name).catch(() => undefined);
    await rm(file, { force: true });
  }
}

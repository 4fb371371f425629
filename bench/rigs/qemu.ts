// Rig 2, real QEMU: a burst of VMs from the tiny template on one host agent on qemu:///system
// (software emulation here), create -> Running and create -> guest IP, where "guest IP" is the
// moment dnsmasq leased the VM its address (the guest's own DHCP request). Needs root and QEMU.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import { tearDownHost } from "../../devcluster/cloud-processes.ts";
import { freeSubnet } from "../../devcluster/cloud-seed.ts";
import { buildTinyGuest } from "../../devcluster/guest-images.ts";
import { canRunQemu, ensureLibvirtDaemons, stopLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { libvirtNetworkName } from "../../host-agent/network-xml.ts";
import { clusterIdentity } from "../../host-agent/registration.ts";
import { isNotFound } from "../../runtime/client.ts";
import { pollUntil } from "../../runtime/time.ts";
import type { BenchContext } from "../lib/context.ts";
import { type Summary, summarize } from "../lib/stats.ts";
import { VmWatch } from "../lib/vm-watch.ts";

const run = promisify(execFile);

export type QemuResult =
  | { skipped: string }
  | { vms: number; createToRunning: Summary; createToGuestIp: Summary; samples: number[] };

export async function measureQemu(context: BenchContext, options: { vms: number }): Promise<QemuResult> {
  if (!canRunQemu()) return { skipped: "needs root with libvirt and QEMU installed" };
  const startedDaemons = await ensureLibvirtDaemons(context.progress);
  const namespace = "bench-rig2";
  const zone = "bench-qemu";
  const host = "bench-qemu";
  try {
    await context.namespace(namespace);
    const guest = await buildTinyGuest();
    await context.apply(Resources.zones, { metadata: { name: zone }, spec: {} });
    await context.apply(Resources.serviceOfferings, {
      metadata: { name: "bench-qemu-tiny" },
      spec: { cpu: 1, memory: "128Mi" },
    });
    await context.apply(Resources.templates, {
      metadata: { name: "bench-tiny-linux" },
      spec: {
        source: { directBoot: { kernel: guest.kernel, initrd: guest.initrd, commandLine: "console=ttyS0" } },
      },
    });
    const network = (await context.apply(Resources.networks, {
      metadata: { name: "bench-net", namespace },
      spec: { zone, cidr: await freeSubnet() },
    })) as { metadata: { uid?: string } };
    const agent = await context.start("agent-qemu", "host-agent/main.ts", [
      `--host-name=${host}`,
      `--zone=${zone}`,
      "--libvirt-uri=qemu:///system",
      `--pool-path=/var/lib/stratus/bench/pool`,
      `--cache-dir=/var/lib/stratus/bench/cache`,
      `--console-dir=/run/stratus/bench-console`,
      `--fence-dir=/run/stratus/bench-fence`,
      "--shutdown-grace=5",
    ]);
    await agent.ready;
    // A burst bigger than this machine's cores: overcommit, as an admin of a small host would
    // (once the agent has registered the Host, which comes after its /healthz).
    await pollUntil(
      `Host ${host} to be registered`,
      () =>
        context.client
          .mergePatch(Resources.hosts, host, undefined, { spec: { cpuOvercommitRatio: 16 } })
          .then(
            () => true,
            (error: unknown) => (isNotFound(error) ? false : Promise.reject(error)),
          ),
      { timeoutMs: 60_000 },
    );
    const watch = new VmWatch(context.client, namespace);
    await watch.start();
    context.progress(`rig 2: ${options.vms} real QEMU guests at once`);
    const sentAt = new Map<string, number>();
    await Promise.all(
      Array.from({ length: options.vms }, async (_, i) => {
        const name = `guest-${i}`;
        sentAt.set(name, Date.now());
        await context.client.create(Resources.virtualMachines, {
          metadata: { name, namespace },
          spec: {
            zone,
            serviceOffering: "bench-qemu-tiny",
            template: "bench-tiny-linux",
            nics: [{ name: "eth0", network: "bench-net" }],
          },
        } as VirtualMachine);
      }),
    );
    // Leases by MAC as dnsmasq hands them out; the VM's MAC is in its status.
    const leasedAt = new Map<string, number>();
    const owner = { cluster: await clusterIdentity(context.client), host };
    const libvirtNetwork = libvirtNetworkName(owner, network.metadata.uid as string);
    await pollUntil(
      () => `${options.vms} guests to take an address (${leasedAt.size} did)`,
      async () => {
        const leases = await run("virsh", ["-c", "qemu:///system", "net-dhcp-leases", libvirtNetwork]).then(
          (r) => r.stdout,
          () => "",
        );
        for (const vm of (await context.client.list<VirtualMachine>(Resources.virtualMachines, { namespace }))
          .items) {
          const mac = vm.status?.nics?.[0]?.macAddress;
          const name = vm.metadata.name as string;
          // A guest its host refuses (a domain another agent owns, a missing image...) never gets
          // an address: say why now instead of waiting out the timeout.
          const ready = vm.status?.conditions?.find((c) => c.type === "Ready");
          if (ready?.status === "False" && ready.reason !== "Converging")
            throw new Error(`rig 2: guest ${name} cannot start: ${ready.reason}: ${ready.message}`);
          if (mac && !leasedAt.has(name) && leases.includes(mac)) leasedAt.set(name, Date.now());
        }
        return leasedAt.size === options.vms;
      },
      { timeoutMs: 600_000 },
    );
    await watch.stop();
    const toIp = [...leasedAt].map(([name, at]) => (at - (sentAt.get(name) as number)) / 1000);
    const toRunning = [...watch.stamps]
      .filter(([, s]) => s.Running !== undefined)
      .map(([name, s]) => ((s.Running as number) - (sentAt.get(name) as number)) / 1000);
    // Leave nothing: the agent removes the domains and the network once the VMs are gone.
    for (const name of sentAt.keys()) await context.client.delete(Resources.virtualMachines, name, namespace);
    await pollUntil(
      "the guests to be gone",
      async () => (await context.client.list(Resources.virtualMachines, { namespace })).items.length === 0,
      { timeoutMs: 300_000, intervalMs: 500 },
    );
    await agent.stop();
    await tearDownHost("qemu:///system", 5, {
      hostName: host,
      kubeconfig: context.controlPlane.kubeconfigPath,
    });
    return {
      vms: options.vms,
      createToRunning: summarize(toRunning),
      createToGuestIp: summarize(toIp),
      samples: toIp,
    };
  } finally {
    if (startedDaemons) await stopLibvirtDaemons();
  }
}

// The two-hypervisor harness itself: a second libvirt daemon with its own host UUID next to the
// machine's, a host agent on each, and nothing of the second daemon left once it is stopped.
import { randomBytes } from "node:crypto";
import { readdir, readFile, readlink, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type Host, Resources } from "../../crds/index.ts";
import { canRunQemu } from "../../devcluster/libvirt.ts";
import { KubeClient } from "../../runtime/client.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";
import {
  processesInNamespace,
  startTwoHypervisorHosts,
  type TwoHypervisorHosts,
  virshOn,
} from "./two-hypervisors.ts";

describe.skipIf(!canRunQemu())("two real hypervisors on one machine (needs root and libvirt/QEMU)", () => {
  const suffix = randomBytes(3).toString("hex");
  const workDir = `/var/lib/stratus/two-hv-${suffix}`;
  let cloud: TwoHypervisorHosts | undefined;
  let client: KubeClient | undefined;

  afterAll(async () => {
    await cloud?.stop();
    await client?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("runs a second libvirtd with its own host UUID and an agent on each daemon; stopping it leaves nothing", async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const namespace = await useNamespace(controlPlane.kubeConfig, "twohv");
    const zone = `twohv-${suffix}`;
    await client.create(Resources.zones, { metadata: { name: zone }, spec: {} });
    cloud = await startTwoHypervisorHosts({
      kubeconfigPath: controlPlane.kubeconfigPath,
      names: [`hva-${suffix}`, `hvb-${suffix}`],
      zone,
      leaseNamespace: namespace,
      workDir,
    });
    const uuid = async (uri: string) => /<uuid>([^<]+)<\/uuid>/.exec(await virshOn(uri, "capabilities"))?.[1];
    const [first, second] = cloud.hosts;
    expect(await uuid(second.uri)).toBe(cloud.second.hostUuid);
    expect(await uuid(first.uri)).not.toBe(cloud.second.hostUuid);
    for (const host of cloud.hosts) {
      const registered = await waitFor(`Host ${host.name} registered`, async () => {
        const h = await client?.get<Host>(Resources.hosts, host.name).catch(() => undefined);
        return h?.status?.hypervisor ? h : undefined;
      });
      expect(registered.status?.hypervisor?.type).toMatch(/^(KVM|QEMU)$/);
    }
    const namespaceOfDaemon = await readlink(`/proc/${(await processesOf(cloud.second.dir))[0]}/ns/mnt`);
    expect(namespaceOfDaemon).not.toBe(await readlink("/proc/self/ns/mnt"));
    await cloud.stop();
    cloud = undefined;
    expect(await processesInNamespace(namespaceOfDaemon)).toEqual([]);
    for (const name of [first.name, second.name])
      await client.delete(Resources.hosts, name).catch(() => undefined);
    await client.delete(Resources.zones, zone).catch(() => undefined);
  }, 180_000);
});

/** The PIDs of the second daemon's processes (run from its bin directory). */
async function processesOf(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (/^\d+$/.test(entry) && cmdline.startsWith(join(dir, "bin"))) pids.push(Number(entry));
  }
  return pids;
}

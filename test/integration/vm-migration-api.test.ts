// CloudStack's migration commands where they refuse, without hypervisors: the VMs, volumes and
// hosts are written as their controllers and agents would. A stopped VM, a VM on local storage and
// the VM's own host are refused with CloudStack's texts; findHostsForMigration says why each host
// does not fit (a simulated host, one in maintenance, one without a migration URI).
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Host, localPoolName, Resources, type VirtualMachine } from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import { type Account, adminAndUser, cs } from "./cloudstack-accounts.ts";
import { type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `mapi-${suffix}`;
const HOSTS = ["a", "b", "c", "d"].map((h) => `mapi-${h}-${suffix}`);

describe("CloudStack's migration commands refuse what cannot move", () => {
  let client: KubeClient;
  let admin: Account;
  let api: StratusProcess;
  let endpoint: string;
  const ready = [
    {
      type: "Ready",
      status: "True",
      reason: "LeaseCurrent",
      message: "",
      lastTransitionTime: new Date().toISOString(),
    },
  ];

  async function host(name: string, status: Record<string, unknown>, spec: Record<string, unknown> = {}) {
    await client.create(Resources.hosts, { metadata: { name }, spec: { zone: ZONE, ...spec } });
    await client.mergePatch(
      Resources.hosts,
      name,
      undefined,
      {
        status: {
          capacity: { cpu: 8, memory: "16Gi" },
          conditions: ready,
          storagePools: [{ name: `shared-${suffix}`, ready: true, capacity: "100Gi" }],
          ...status,
        },
      },
      "status",
    );
  }

  async function vm(name: string, state: string, pool: string): Promise<VirtualMachine> {
    const created = await client.create<VirtualMachine>(Resources.virtualMachines, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VirtualMachine",
      metadata: { name, namespace: admin.namespace },
      spec: { zone: ZONE, serviceOffering: `mapi-${suffix}`, template: `mapi-${suffix}` },
    });
    await client.mergePatch(
      Resources.virtualMachines,
      name,
      admin.namespace,
      { status: { host: HOSTS[0], state } },
      "status",
    );
    await client.create(Resources.volumes, {
      metadata: { name: `${name}-root`, namespace: admin.namespace },
      spec: { zone: ZONE, type: "ROOT", size: "1Gi" },
    });
    await client.mergePatch(
      Resources.volumes,
      `${name}-root`,
      admin.namespace,
      { status: { pool, host: HOSTS[0], phase: "Attached" } },
      "status",
    );
    return created;
  }

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "mapikeys");
    ({ admin } = await adminAndUser(client, { keysNamespace, suffix, prefix: "mapi" }));
    await client.create(Resources.zones, { metadata: { name: ZONE }, spec: {} });
    await client.create(Resources.serviceOfferings, {
      metadata: { name: `mapi-${suffix}` },
      spec: { cpu: 1, memory: "1Gi" },
    });
    await client.create(Resources.storagePools, {
      metadata: { name: `shared-${suffix}` },
      spec: { zone: ZONE, type: "sharedMountPoint", path: "/mnt/shared" },
    });
    const migratable = (name: string) => ({
      hypervisor: { type: "KVM", version: "9", libvirtVersion: "9", uri: "qemu:///system" },
      migrationUri: `qemu+tls://${name}/system`,
    });
    await host(HOSTS[0] as string, migratable(HOSTS[0] as string));
    await host(HOSTS[1] as string, {
      hypervisor: { type: "Simulator", version: "", libvirtVersion: "", uri: "test:///default" },
    });
    await host(HOSTS[2] as string, migratable(HOSTS[2] as string), { maintenance: true });
    await host(HOSTS[3] as string, {
      hypervisor: { type: "KVM", version: "9", libvirtVersion: "9", uri: "qemu:///system" },
    });
    const started = await startApiServer({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      identity: `mapi-api-${suffix}`,
      keysNamespace,
    });
    api = started.process;
    endpoint = started.endpoint;
  });

  afterAll(async () => {
    await api?.stop("SIGKILL");
    for (const name of HOSTS) await client.delete(Resources.hosts, name).catch(() => undefined);
    await client.delete(Resources.storagePools, `shared-${suffix}`).catch(() => undefined);
    await client.delete(Resources.serviceOfferings, `mapi-${suffix}`).catch(() => undefined);
    await client.delete(Resources.zones, ZONE).catch(() => undefined);
    await client?.close();
  });

  const errorOf = (result: Awaited<ReturnType<typeof cs>>, command: string) =>
    result.json[`${command.toLowerCase()}response`] as { errorcode?: number; errortext?: string } | undefined;

  it("refuses a stopped VM, a VM on local storage and the VM's own host, with CloudStack's texts", async () => {
    const stopped = await vm("stopped", "Stopped", `shared-${suffix}`);
    const local = await vm("local", "Running", localPoolName(HOSTS[0] as string));
    const running = await vm("running", "Running", `shared-${suffix}`);
    const own = (await client.get<Host>(Resources.hosts, HOSTS[0] as string)).metadata.uid as string;
    const cases = [
      [stopped, {}, /VM is not Running, unable to migrate the vm/],
      [local, {}, /Unsupported operation, VM uses Local storage, cannot migrate/],
      [running, { hostid: own }, /VM is already present on this host/],
      [running, { storageid: own }, /storageid is not supported/],
    ] as const;
    for (const [target, args, text] of cases) {
      // The API component answers from its caches: the objects show there in a moment.
      const refusal = await waitFor(`migrateVirtualMachine of ${target.metadata.name} refused`, async () => {
        const result = await cs(endpoint, admin, "migrateVirtualMachine", {
          virtualmachineid: target.metadata.uid as string,
          ...args,
        });
        const error = errorOf(result, "migrateVirtualMachine");
        return error?.errortext && text.test(error.errortext) ? error : undefined;
      });
      expect(refusal.errorcode).toBe(431);
    }
  });

  it("findHostsForMigration says why each other host does not fit", async () => {
    const running = (await client.get<VirtualMachine>(Resources.virtualMachines, "running", admin.namespace))
      .metadata.uid as string;
    const found = await cs(endpoint, admin, "findHostsForMigration", { virtualmachineid: running });
    const hosts = found.json.host as {
      name: string;
      suitableformigration: boolean;
      notsuitablereason?: string;
    }[];
    expect(hosts.map((h) => [h.name, h.suitableformigration, h.notsuitablereason])).toEqual([
      [HOSTS[1], false, "simulated (libvirt's test driver cannot migrate)"],
      [HOSTS[2], false, "in maintenance"],
      [HOSTS[3], false, "its agent takes no migrations (no status.migrationUri)"],
    ]);
  });
});

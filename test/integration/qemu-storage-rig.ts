// Two host agents on this machine's libvirt daemon (real QEMU), each with a local pool of its own and
// its own node-bound identity under the manifests' RBAC and admission policy, an operator, and a zone whose secondary storage and shared pool are directories both hosts see
// (as NFS mounts would be); helpers to boot the tiny guest, have it write a word at the start of its
// disks, and read the words back wherever it runs. Registers its own hooks; each test file has one.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import {
  type Host,
  localPoolName,
  Resources,
  type StoragePool,
  type VirtualMachine,
  type Volume,
} from "../../crds/index.ts";
import { ensureLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { poolName, sharedPoolName } from "../../host-agent/libvirt-hypervisor.ts";
import { KubeClient } from "../../runtime/client.ts";
import { readConsoleUntil, typeOnConsole } from "./guest-console.ts";
import { applyManifests, TestIdentities } from "./identities.ts";
import { type StratusProcess, startOperator, startStratusProcess } from "./processes.ts";
import { agentOwner, serveTinyGuest, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const run = promisify(execFile);
const virsh = async (...args: string[]) => (await run("virsh", ["-c", "qemu:///system", ...args])).stdout;

export type QemuStorageRig = ReturnType<typeof qemuStorageRig>;

/** `prefix` names the zone, hosts and work directory of one test file. */
export function qemuStorageRig(prefix: string) {
  const suffix = randomBytes(3).toString("hex");
  const zone = `${prefix}-${suffix}`;
  const hosts = [`${prefix}1-${suffix}`, `${prefix}2-${suffix}`];
  const workDir = `/var/lib/stratus/${prefix}-${suffix}`;
  const sharedDir = join(workDir, "shared");
  let client: KubeClient;
  let namespace: string;
  let kubeconfigPath: string;
  let operator: StratusProcess;
  let identities: TestIdentities;
  const agents = new Map<string, StratusProcess>();

  const getVm = (name: string) => client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
  const getVolume = (name: string) => client.get<Volume>(Resources.volumes, name, namespace);
  const consoleOf = (host: string, vm: VirtualMachine) =>
    join(workDir, host, "console", `${vm.metadata.uid}.sock`);
  const other = (host: string) => hosts.find((h) => h !== host) as string;
  const setMaintenance = (host: string, maintenance: boolean) =>
    client.mergePatch(Resources.hosts, host, undefined, { spec: { maintenance } });
  const runningOn = (name: string, host: string, timeoutMs = 180_000) =>
    waitFor(
      `VM ${name} Running on ${host}`,
      async () => {
        const vm = await getVm(name);
        return vm.status?.host === host && vm.status.state === "Running" ? vm : undefined;
      },
      { timeoutMs, intervalMs: 500 },
    );
  const hostState = (host: string, state: string) =>
    waitFor(
      `host ${host} ${state}`,
      async () => {
        const h = await client.get<Host>(Resources.hosts, host);
        return h.status?.resourceState === state ? h : undefined;
      },
      { timeoutMs: 180_000, intervalMs: 500 },
    );

  /** The zone's sharedMountPoint pool, made once, ready on both hosts. */
  async function sharedPoolReady(): Promise<void> {
    await client
      .create(Resources.storagePools, {
        metadata: { name: `shared-${suffix}` },
        spec: { zone, type: "sharedMountPoint", path: sharedDir },
      })
      .catch(() => undefined); // made by an earlier test
    await waitFor("the shared pool ready on both hosts", async () => {
      const pool = await client.get<StoragePool>(Resources.storagePools, `shared-${suffix}`);
      return pool.status?.hosts?.ready === 2 ? pool : undefined;
    });
  }

  /** Boots a VM with a root and a data disk and has the guest write `word` at the start of each. */
  async function bootAndWrite(name: string, volume: string, word: string): Promise<VirtualMachine> {
    await client.create(Resources.virtualMachines, {
      metadata: { name, namespace },
      spec: {
        zone,
        serviceOffering: `mv-${suffix}`,
        template: `tiny-${suffix}`,
        rootDisk: { size: "1Gi" },
        dataVolumes: [{ name: "data", volume }],
      },
    });
    const vm = await waitFor(
      `VM ${name} Running`,
      async () => {
        const v = await getVm(name);
        return v.status?.state === "Running" ? v : undefined;
      },
      { timeoutMs: 180_000 },
    );
    const socket = consoleOf(vm.status?.host as string, vm);
    await readConsoleUntil(socket, /stratus-guest: disk vdb serial=data/);
    for (const disk of ["vda", "vdb"]) {
      await typeOnConsole(socket, `stratus-write ${disk} ${word}-${disk}`);
      await readConsoleUntil(
        socket,
        new RegExp(`stratus-guest: disk ${disk} serial=\\S* sectors=\\d+ head=${word}-${disk}`),
      );
    }
    return vm;
  }

  /** The guest, wherever it runs now, reads the words back from its disks. */
  async function readsBack(
    vm: VirtualMachine,
    host: string,
    word: string,
    disks = ["vda", "vdb"],
  ): Promise<void> {
    const socket = consoleOf(host, vm);
    for (const disk of disks)
      expect(
        await readConsoleUntil(
          socket,
          new RegExp(`stratus-guest: disk ${disk} serial=\\S* sectors=\\d+ head=${word}-${disk}`),
        ),
      ).toBeTruthy();
  }

  beforeAll(async () => {
    await ensureLibvirtDaemons();
    await mkdir(sharedDir, { recursive: true, mode: 0o755 });
    // What an administrator marks a shared file system with, since this one is no mount of its own.
    await writeFile(join(sharedDir, ".stratus-shared"), "");
    const tinyGuest = await serveTinyGuest();
    const controlPlane = await sharedControlPlane();
    kubeconfigPath = controlPlane.kubeconfigPath;
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "mv");
    await client.create(Resources.zones, {
      metadata: { name: zone },
      spec: { secondaryStorage: { path: join(workDir, "secondary") } },
    });
    await client.create(Resources.serviceOfferings, {
      metadata: { name: `mv-${suffix}` },
      spec: { cpu: 1, memory: "128Mi" },
    });
    await client.create(Resources.templates, {
      metadata: { name: `tiny-${suffix}` },
      spec: { source: tinyGuest },
    });
    operator = await startOperator({
      kubeconfigPath,
      identity: `mv-operator-${suffix}`,
      args: [`--lease-namespace=${namespace}`],
    });
    await applyManifests();
    identities = new TestIdentities(client, workDir);
    for (const host of hosts) {
      const dir = join(workDir, host);
      agents.set(
        host,
        await startStratusProcess({
          script: "host-agent/main.ts",
          kubeconfigPath: await identities.hostAgent(host, { leaseNamespace: namespace }),
          identity: host,
          args: [
            `--host-name=${host}`,
            `--zone=${zone}`,
            "--libvirt-uri=qemu:///system",
            `--lease-namespace=${namespace}`,
            `--pool-path=${join(dir, "pool")}`,
            `--cache-dir=${join(dir, "cache")}`,
            `--console-dir=${join(dir, "console")}`,
            `--fence-dir=${join(dir, "fence")}`,
            "--shutdown-grace=3",
            "--heartbeat-interval=1",
          ],
        }),
      );
    }
    // Each host's local pool is made by the storage controller and reported ready by its agent.
    for (const host of hosts)
      await waitFor(`the local pool of ${host} ready`, async () => {
        const pool = await client
          .get<StoragePool>(Resources.storagePools, localPoolName(host))
          .catch(() => undefined);
        return pool?.status?.conditions?.find((c) => c.type === "Ready" && c.status === "True");
      });
    // Tiny guests: room for every test's VMs on either host (this machine has 2 CPUs).
    for (const host of hosts)
      await client.mergePatch(Resources.hosts, host, undefined, { spec: { cpuOvercommitRatio: 4 } });
  }, 300_000);

  afterEach((context) => {
    if (context.task.result?.state === "fail")
      for (const [host, agent] of agents)
        process.stderr.write(`agent ${host} log:\n${agent.logs().slice(-6000)}\n`);
  });

  afterAll(async () => {
    const left = await client
      ?.list<VirtualMachine>(Resources.virtualMachines, { namespace })
      .catch(() => undefined);
    for (const vm of left?.items ?? [])
      await client
        .delete(Resources.virtualMachines, vm.metadata.name as string, namespace)
        .catch(() => undefined);
    await waitFor("the test's domains gone", async () => {
      const vms = await client.list<VirtualMachine>(Resources.virtualMachines, { namespace });
      return vms.items.length === 0;
    }).catch(() => undefined);
    for (const agent of agents.values()) await agent.stop("SIGKILL");
    await operator?.stop("SIGKILL");
    await identities?.cleanup();
    for (const host of hosts) {
      const owner = await agentOwner(client, host);
      for (const pool of [poolName(owner), sharedPoolName(owner, `shared-${suffix}`)]) {
        await virsh("pool-destroy", pool).catch(() => undefined);
        await virsh("pool-undefine", pool).catch(() => undefined);
      }
    }
    await client?.delete(Resources.zones, zone).catch(() => undefined);
    await client?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  return {
    suffix,
    zone,
    hosts,
    workDir,
    sharedDir,
    get client() {
      return client;
    },
    get namespace() {
      return namespace;
    },
    getVm,
    getVolume,
    consoleOf,
    other,
    setMaintenance,
    runningOn,
    hostState,
    sharedPoolReady,
    bootAndWrite,
    readsBack,
  };
}

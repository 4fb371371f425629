// A host agent on the machine's qemu:///system for a test file, and the libvirt objects it leaves
// when a run fails half-way (networks with their dnsmasq, its pool), removed afterwards.
import { execFile } from "node:child_process";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach } from "vitest";
import { Resources } from "../../crds/index.ts";
import { poolName } from "../../host-agent/libvirt-hypervisor.ts";
import { networkPrefix } from "../../host-agent/network-xml.ts";
import { KubeClient } from "../../runtime/client.ts";
import { writeConsoleKeys } from "../../runtime/console-ticket.ts";
import {
  type ApiServerProcess,
  type StratusProcess,
  startApiServer,
  startOperator,
  startStratusProcess,
} from "./processes.ts";
import { agentOwner, sharedControlPlane, useNamespace } from "./support.ts";

const run = promisify(execFile);
export const virsh = async (...args: string[]) =>
  (await run("virsh", ["-c", "qemu:///system", ...args])).stdout;

/**
 * The control plane a real guest needs besides its agent: the operator (compute prepares the guest:
 * root volume, address; and places it) and the API component with the aggregated API (the console,
 * and virtualmachines/userdata through which the agent reads user data and passwords).
 */
export async function startGuestControlPlane(options: {
  kubeconfigPath: string;
  client: KubeClient;
  namespace: string;
  workDir: string;
  name: string;
}): Promise<{ operator: StratusProcess; api: ApiServerProcess }> {
  const { kubeconfigPath, namespace, workDir, name } = options;
  const operator = await startOperator({
    kubeconfigPath,
    identity: `${name}-operator`,
    args: [`--lease-namespace=${namespace}`],
  });
  const consoleKeys = await writeConsoleKeys(workDir);
  const api = await startApiServer({
    kubeconfigPath,
    client: options.client,
    identity: `${name}-api`,
    keysNamespace: namespace,
    subresources: { namespace, workDir, consoleKeyFile: consoleKeys.privateKeyFile },
  });
  return { operator, api };
}

/** Its pool, image cache and console sockets live under workDir (readable by QEMU). */
export function startQemuHostAgent(options: {
  kubeconfigPath: string;
  host: string;
  zone: string;
  leaseNamespace: string;
  workDir: string;
  args?: string[];
}): Promise<StratusProcess> {
  const { host, workDir } = options;
  return startStratusProcess({
    script: "host-agent/main.ts",
    kubeconfigPath: options.kubeconfigPath,
    identity: host,
    args: [
      `--host-name=${host}`,
      `--zone=${options.zone}`,
      "--libvirt-uri=qemu:///system",
      `--lease-namespace=${options.leaseNamespace}`,
      `--pool-path=${join(workDir, "pool")}`,
      `--cache-dir=${join(workDir, "cache")}`,
      `--console-dir=${join(workDir, "console")}`,
      ...(options.args ?? []),
    ],
  });
}

/** The networks and pool of the host's agent, so the next run starts clean. */
export async function removeAgentLibvirtObjects(client: KubeClient, host: string): Promise<void> {
  const owner = await agentOwner(client, host);
  for (const name of (await virsh("net-list", "--all", "--name").catch(() => "")).split("\n"))
    if (name.startsWith(networkPrefix(owner))) {
      await virsh("net-destroy", name).catch(() => undefined);
      await virsh("net-undefine", name).catch(() => undefined);
    }
  const pool = poolName(owner);
  await virsh("pool-destroy", pool).catch(() => undefined);
  await virsh("pool-undefine", pool).catch(() => undefined);
}

/**
 * A namespace of the shared control plane with what a guest needs there: an offering, a template
 * and a network (cluster-scoped names carry the suffix).
 */
export async function guestCatalog(options: {
  prefix: string;
  suffix: string;
  zone: string;
  memory: string;
  template: Record<string, unknown>;
  network: { name: string; cidr: string };
}): Promise<{ kubeconfigPath: string; client: KubeClient; namespace: string }> {
  const controlPlane = await sharedControlPlane();
  const client = new KubeClient(controlPlane.kubeConfig);
  const namespace = await useNamespace(controlPlane.kubeConfig, options.prefix);
  await client.create(Resources.serviceOfferings, {
    metadata: { name: `${options.prefix}-${options.suffix}` },
    spec: { cpu: 1, memory: options.memory },
  });
  await client.create(Resources.templates, {
    metadata: { name: `${options.prefix}-${options.suffix}` },
    spec: options.template,
  });
  await client.create(Resources.networks, {
    metadata: { name: options.network.name, namespace },
    spec: { zone: options.zone, cidr: options.network.cidr },
  });
  return { kubeconfigPath: controlPlane.kubeconfigPath, client, namespace };
}

/** Stops a guest test's agent, operator and API component and removes what the agent left. */
export async function stopGuestCloud(cloud: {
  agent: StratusProcess | undefined;
  operator: StratusProcess | undefined;
  api: ApiServerProcess | undefined;
  client: KubeClient | undefined;
  host: string;
  workDir: string;
}): Promise<void> {
  await cloud.agent?.stop("SIGKILL");
  await cloud.operator?.stop("SIGKILL");
  await cloud.api?.process.stop("SIGKILL");
  if (cloud.client) {
    await removeAgentLibvirtObjects(cloud.client, cloud.host);
    await cloud.client.close();
  }
  await rm(cloud.workDir, { recursive: true, force: true });
}

/** The agent's log is the first thing to read when a step times out: printed after a failed test. */
export function printAgentLogOnFailure(agent: () => StratusProcess | undefined): void {
  afterEach((context) => {
    if (context.task.result?.state === "fail")
      process.stderr.write(`agent log:\n${agent()?.logs().slice(-8000)}\n`);
  });
}

// Runs Stratus processes (operator, host agent, API component) for tests, each with its own health port and log capture.

import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { afterEach } from "vitest";
import { type Host, Resources } from "../../crds/index.ts";
import {
  APISERVICE,
  prepareSubresources,
  registerSubresources,
  SUBRESOURCE_APISERVICE,
} from "../../devcluster/aggregation.ts";
import { isAlive } from "../../devcluster/controlplane.ts";
import { freePort } from "../../devcluster/ports.ts";
import { stopWatchdog } from "../../host-agent/fence-state.ts";
import type { KubeClient, KubeObject } from "../../runtime/client.ts";
import { afterThisFile } from "./file-cleanup.ts";
import { waitFor } from "./support.ts";

export interface StratusProcess {
  child: ChildProcess;
  identity: string;
  healthUrl: string;
  logs: () => string;
  /** Sends a signal and waits for the process to exit; resolves to its exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  get(path: string): Promise<{ status: number; body: string }>;
}

/** Starts `script` (e.g. operator/main.ts) with a kubeconfig and a free health port; waits for /healthz. */
export async function startStratusProcess(options: {
  script: string;
  kubeconfigPath: string;
  identity: string;
  args?: string[];
  /** Added to the process's environment (e.g. an agent's store credentials). */
  env?: Record<string, string>;
}): Promise<StratusProcess> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      options.script,
      `--kubeconfig=${options.kubeconfigPath}`,
      `--health-address=127.0.0.1:${port}`,
      ...(options.args ?? []),
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, STRATUS_LOG_LEVEL: "debug", ...options.env },
    },
  );
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const healthUrl = `http://127.0.0.1:${port}`;
  const operator: StratusProcess = {
    child,
    identity: options.identity,
    healthUrl,
    logs: () => output,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.pid !== undefined && isAlive(child.pid)) child.kill(signal);
      return exited;
    },
    async get(path) {
      const response = await fetch(`${healthUrl}${path}`);
      return { status: response.status, body: await response.text() };
    },
  };
  await waitFor(
    `${options.script} (${options.identity}) to serve /healthz`,
    async () => {
      if (child.exitCode !== null)
        throw new Error(`${options.script} exited with ${child.exitCode}:\n${output}`);
      return (await operator.get("/healthz")).status === 200;
    },
    { timeoutMs: 30_000 },
  );
  return operator;
}

export function startOperator(options: {
  kubeconfigPath: string;
  identity: string;
  args?: string[];
}): Promise<StratusProcess> {
  return startStratusProcess({
    ...options,
    script: "operator/main.ts",
    args: [`--identity=${options.identity}`, ...(options.args ?? [])],
  });
}

/** A host agent on libvirt's test driver; its pool, image cache and console sockets live under workDir. */
export function startHostAgent(options: {
  kubeconfigPath: string;
  hostName: string;
  zone: string;
  leaseNamespace: string;
  workDir: string;
  args?: string[];
  env?: Record<string, string>;
}): Promise<StratusProcess> {
  const { hostName, workDir } = options;
  return startStratusProcess({
    script: "host-agent/main.ts",
    kubeconfigPath: options.kubeconfigPath,
    identity: hostName,
    ...(options.env ? { env: options.env } : {}),
    args: [
      `--host-name=${hostName}`,
      "--libvirt-uri=test:///default",
      `--zone=${options.zone}`,
      `--lease-namespace=${options.leaseNamespace}`,
      "--heartbeat-interval=1",
      `--pool-path=${join(workDir, "pools", hostName)}`,
      `--cache-dir=${join(workDir, "cache", hostName)}`,
      `--console-dir=${join(workDir, "console", hostName)}`,
      `--fence-dir=${fenceDir(workDir, hostName)}`,
      ...(options.args ?? []),
    ],
  });
}

export interface ApiServerProcess {
  process: StratusProcess;
  /** http://127.0.0.1:PORT/client/api */
  endpoint: string;
}

/**
 * stratus-apiserver with its CloudStack endpoint and, with `subresources`, the aggregated API
 * registered the way manifests do it: a serving certificate from a fresh CA (the APIService's
 * caBundle), a Service for the APIService (ExternalName: this machine), and the APIService; the
 * registration is removed after the calling file. Waits until the aggregator reports it Available.
 */
export async function startApiServer(options: {
  kubeconfigPath: string;
  client: KubeClient;
  identity: string;
  keysNamespace: string;
  /** With `consoleKeyFile`, the private console key (host agents get the public half). */
  subresources?: { namespace: string; workDir: string; consoleKeyFile?: string };
}): Promise<ApiServerProcess> {
  const port = await freePort();
  const args = [`--listen=127.0.0.1:${port}`, `--keys-namespace=${options.keysNamespace}`];
  const aggregated = options.subresources;
  const served = aggregated
    ? await prepareSubresources({ namespace: aggregated.namespace, dir: aggregated.workDir })
    : undefined;
  if (served) args.push(...served.args);
  if (aggregated?.consoleKeyFile) args.push(`--console-key-file=${aggregated.consoleKeyFile}`);
  const apiProcess = await startStratusProcess({
    script: "apiserver/main.ts",
    kubeconfigPath: options.kubeconfigPath,
    identity: options.identity,
    args,
  });
  await waitFor(
    "the API component to be ready",
    async () => (await apiProcess.get("/readyz")).status === 200,
  );
  if (served) {
    await registerSubresources(options.client, served, "stratus-test");
    afterThisFile(() => options.client.delete(APISERVICE, SUBRESOURCE_APISERVICE).catch(() => undefined));
  }
  return { process: apiProcess, endpoint: `http://127.0.0.1:${port}/client/api` };
}

/** A Stratus domain as an agent's /debug/domains shows it. */
/**
 * A whole small cloud for the CloudStack API tests: the operator, simulated hosts and the API,
 * killed after the calling file.
 */
export async function startCloudStackCloud(options: {
  kubeconfigPath: string;
  client: KubeClient;
  prefix: string;
  zone: string;
  hosts: string[];
  keysNamespace: string;
  workDir: string;
}): Promise<{ processes: StratusProcess[]; endpoint: string }> {
  const { kubeconfigPath, prefix, keysNamespace } = options;
  const processes: StratusProcess[] = [];
  afterThisFile(() => Promise.all(processes.map((p) => p.stop("SIGKILL"))));
  processes.push(
    await startOperator({
      kubeconfigPath,
      identity: `${prefix}-operator`,
      args: [`--lease-namespace=${keysNamespace}`],
    }),
  );
  for (const hostName of options.hosts)
    processes.push(
      await startHostAgent({
        kubeconfigPath,
        hostName,
        zone: options.zone,
        leaseNamespace: keysNamespace,
        workDir: options.workDir,
      }),
    );
  const api = await startApiServer({
    kubeconfigPath,
    client: options.client,
    identity: `${prefix}-api`,
    keysNamespace,
  });
  return { processes: [...processes, api.process], endpoint: api.endpoint };
}

export interface DebugDomain {
  name: string;
  state: string;
  disks?: string[];
}

function fenceDir(workDir: string, host: string): string {
  return join(workDir, "fence", host);
}

type SimulatedAgentOptions = Omit<Parameters<typeof startHostAgent>[0], "hostName"> & {
  /** Each host's own kubeconfig (its agent's identity); `kubeconfigPath` otherwise. */
  kubeconfigFor?: (host: string) => Promise<string>;
};

/** Host agents on libvirt's test driver for one zone, started (and restarted) by host name. */
export class SimulatedAgents {
  readonly agents = new Map<string, StratusProcess>();
  private readonly options: SimulatedAgentOptions;

  constructor(options: SimulatedAgentOptions) {
    this.options = options;
  }

  async start(host: string): Promise<StratusProcess> {
    const { kubeconfigFor, ...options } = this.options;
    const kubeconfigPath = kubeconfigFor ? await kubeconfigFor(host) : options.kubeconfigPath;
    const agent = await startHostAgent({ ...options, kubeconfigPath, hostName: host });
    this.agents.set(host, agent);
    return agent;
  }

  /** Waits until every named Host reports Ready. */
  waitReady(client: KubeClient, hosts: readonly string[]): Promise<boolean> {
    return waitFor("every host Ready", async () => {
      const found = await Promise.all(hosts.map((h) => client.get<Host>(Resources.hosts, h)));
      return found.every((h) => h.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"));
    });
  }

  /** The Stratus domains the host's hypervisor holds (its /debug/domains lists the others too). */
  async domains(host: string, timeoutMs = 10_000): Promise<DebugDomain[]> {
    const response = await fetch(`${this.agents.get(host)?.healthUrl}/debug/domains`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    return ((await response.json()) as DebugDomain[]).filter((d) => d.name.startsWith("stratus-"));
  }

  /** Kills every agent, waking frozen ones first, and their watchdogs. */
  async stopAll(): Promise<void> {
    for (const [host, agent] of this.agents) {
      if (agent.child.exitCode === null) agent.child.kill("SIGCONT");
      await agent.stop("SIGKILL");
      await stopWatchdog(fenceDir(this.options.workDir, host));
    }
  }
}

/**
 * A zone with secondary storage at `secondaryStorage` and a 1-CPU offering, an operator (no leader
 * election, its Leases in `namespace`) and Ready simulated host agents of the zone: what zone-wide
 * work such as template downloads needs.
 */
export async function startZoneFabric(options: {
  kubeconfigPath: string;
  client: KubeClient;
  namespace: string;
  identity: string;
  zone: string;
  secondaryStorage: string;
  offering: string;
  workDir: string;
  hosts: readonly string[];
}): Promise<{ operator: StratusProcess; simulated: SimulatedAgents; zoneUid: string }> {
  const zone = await options.client.create(Resources.zones, {
    metadata: { name: options.zone },
    spec: { secondaryStorage: { path: options.secondaryStorage } },
  } as KubeObject);
  await options.client.create(Resources.serviceOfferings, {
    metadata: { name: options.offering },
    spec: { cpu: 1, memory: "64Mi" },
  } as KubeObject);
  const operator = await startOperator({
    kubeconfigPath: options.kubeconfigPath,
    identity: options.identity,
    args: [`--lease-namespace=${options.namespace}`, "--leader-elect=false"],
  });
  const simulated = new SimulatedAgents({
    kubeconfigPath: options.kubeconfigPath,
    zone: options.zone,
    leaseNamespace: options.namespace,
    workDir: options.workDir,
    args: ["--shutdown-grace=1"],
  });
  await Promise.all(options.hosts.map((host) => simulated.start(host)));
  await simulated.waitReady(options.client, options.hosts);
  return { operator, simulated, zoneUid: zone.metadata.uid as string };
}

/** After each failed test of the file, the end of these processes' logs (they may not exist yet). */
export function logsOnFailure(processes: () => (StratusProcess | undefined)[]): void {
  afterEach((context) => {
    if (context.task.result?.state !== "fail") return;
    for (const each of processes())
      if (each) process.stderr.write(`--- ${each.identity}:\n${each.logs().slice(-3000)}\n`);
  });
}

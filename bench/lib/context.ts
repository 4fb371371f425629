// What every rig of a benchmark run shares: one local control plane, an admin client, the
// processes the run started (all stopped at its end), and readings of memory and metrics.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { installCustomResourceDefinitions } from "../../crds/install.ts";
import { type LaunchedComponent, launchComponent } from "../../devcluster/cloud-processes.ts";
import { LocalControlPlane, terminate } from "../../devcluster/controlplane.ts";
import { COMPONENTS } from "../../devcluster/controlplane-components.ts";
import { KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import type { ProcessRoles } from "./cpu.ts";
import { MetricsSnapshot, scrape } from "./metrics.ts";

const run = promisify(execFile);
export const NAMESPACE: ResourceType = {
  group: "",
  version: "v1",
  plural: "namespaces",
  kind: "Namespace",
  namespaced: false,
};

export interface StratusProcess extends LaunchedComponent {
  name: string;
  /** Whether it has exited (crashed, or ran out of memory). */
  exited(): boolean;
  metrics(): Promise<MetricsSnapshot>;
  stop(): Promise<void>;
}

export class BenchContext {
  readonly processes = new Set<StratusProcess>();

  readonly controlPlane: LocalControlPlane;
  readonly client: KubeClient;
  readonly workDir: string;
  readonly progress: (message: string) => void;

  private constructor(
    controlPlane: LocalControlPlane,
    client: KubeClient,
    workDir: string,
    progress: (message: string) => void,
  ) {
    this.controlPlane = controlPlane;
    this.client = client;
    this.workDir = workDir;
    this.progress = progress;
  }

  static async create(workDir: string, progress: (message: string) => void): Promise<BenchContext> {
    await mkdir(join(workDir, "logs"), { recursive: true });
    // fsync off in etcd for the whole run, ceiling included: the ratios compare like with like.
    const controlPlane = await LocalControlPlane.start({
      dir: join(workDir, "control-plane"),
      unsafeNoFsync: true,
      progress: (m) => progress(`control plane: ${m}`),
    });
    await installCustomResourceDefinitions(controlPlane.kubeConfig);
    const client = new KubeClient(controlPlane.kubeConfig, { userAgent: "stratus-bench" });
    const context = new BenchContext(controlPlane, client, workDir, progress);
    for (const name of ["stratus-system"]) await context.namespace(name);
    return context;
  }

  async namespace(name: string): Promise<void> {
    await this.client.apply(NAMESPACE, { metadata: { name } }, { fieldManager: "stratus-bench" });
  }

  apply(type: ResourceType, object: KubeObject & Record<string, unknown>): Promise<KubeObject> {
    return this.client.apply(
      type,
      { apiVersion: type.group ? `${type.group}/${type.version}` : type.version, kind: type.kind, ...object },
      { fieldManager: "stratus-bench" },
    );
  }

  /** Starts operator/main.ts, host-agent/main.ts or apiserver/main.ts against the control plane. */
  async start(
    name: string,
    script: string,
    args: string[],
    env: NodeJS.ProcessEnv = {},
  ): Promise<StratusProcess> {
    const launched = await launchComponent({
      script,
      args: [`--kubeconfig=${this.controlPlane.kubeconfigPath}`, ...args],
      logPath: join(this.workDir, "logs", `${name}.log`),
      env: { ...process.env, STRATUS_LOG_LEVEL: "warn", ...env },
    });
    const started: StratusProcess = {
      ...launched,
      name,
      exited: () => launched.child.exitCode !== null || launched.child.signalCode !== null,
      metrics: () => scrape(`http://127.0.0.1:${launched.healthPort}/metrics`),
      stop: async () => {
        this.processes.delete(started);
        await terminate(launched.pid, launched.child, 30_000);
      },
    };
    this.processes.add(started);
    // An exited process leaves the set: its pid may be another process's by the end of the run.
    launched.child.once("exit", () => this.processes.delete(started));
    return started;
  }

  /** kube-apiserver's /metrics, through the built kubectl as the admin. */
  async apiServerMetrics(): Promise<MetricsSnapshot> {
    const { stdout } = await run(
      this.controlPlane.binaries.kubectl,
      ["--kubeconfig", this.controlPlane.kubeconfigPath, "get", "--raw", "/metrics"],
      { maxBuffer: 256 * 1024 * 1024 },
    );
    return new MetricsSnapshot(stdout);
  }

  /**
   * The processes whose CPU a rig reports, by role: the control plane's, the rig's own (`named`:
   * operator, agents, API component) and this benchmark process.
   */
  processRoles(named: ProcessRoles): ProcessRoles {
    const controlPlane = COMPONENTS.map((name) => [name, [this.controlPlane.pid(name) ?? []].flat()]);
    return { ...Object.fromEntries(controlPlane), ...named, benchmark: [process.pid] };
  }

  /** Resident memory of a process, in bytes (from /proc). */
  static rss(pid: number): number {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : Number.NaN;
  }

  async close(): Promise<void> {
    await Promise.all([...this.processes].map((p) => p.stop().catch(() => undefined)));
    await this.controlPlane.stop();
    // Interrupted, a watch may still hold a connection: the client gets a moment, not forever.
    await Promise.race([this.client.close(), sleep(2_000)]);
  }
}

/** Runs `work` for each item with at most `concurrency` in flight. */
export async function withConcurrency<T>(
  items: readonly T[],
  concurrency: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      await work(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

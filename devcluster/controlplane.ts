// A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager,
// the way envtest runs them, plus the controller manager (garbage collection, namespace deletion,
// service-account tokens). Everything lives in one directory; the processes can be stopped and
// started again on the same data, and stop() leaves no process, port or temporary directory.
import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KubeConfig } from "@kubernetes/client-node";
import { isAlive } from "../runtime/process-alive.ts";
import { ApiServerReplica } from "./apiserver-replica.ts";
import {
  type ControlPlaneBinaries,
  ControlPlaneSetupError,
  ensureBinaries,
  type Progress,
} from "./binaries.ts";
import {
  COMPONENTS,
  type ComponentName,
  commandLine,
  isApiServerReady,
  readinessProbe,
  waitUntil,
} from "./controlplane-components.ts";
import { writeClientKubeconfig, writeCredentials } from "./controlplane-credentials.ts";
import {
  type ControlPlaneState,
  isOurProcess,
  livePids,
  readState,
  runningComponents,
  saveState,
  supervisorDir,
} from "./controlplane-state.ts";
import { loadKubeConfig } from "./kubeconfig.ts";
import { freePort } from "./ports.ts";
import { launch, tail, terminate } from "./processes.ts";
import {
  DEFAULT_BACKOFF,
  readSupervision,
  runningSupervisor,
  type Supervision,
  startSupervisor,
  stopSupervision,
  supervisorPaths,
} from "./supervisor.ts";

export { isAlive, launch, tail, terminate };

export interface ControlPlaneOptions {
  /** Where certificates, etcd data, logs and kubeconfigs live. A fresh temporary directory when absent. */
  dir?: string;
  binaries?: ControlPlaneBinaries;
  progress?: Progress;
  /** Keep the processes running after this Node process exits (the `stratus cluster` command). */
  detached?: boolean;
  /** Skip fsync in etcd: much faster on a loaded machine, and safe for throw-away test clusters. */
  unsafeNoFsync?: boolean;
  /** Allowed start-up time per component; a busy 2-core machine needs tens of seconds. */
  readyTimeoutMs?: number;
}

export interface Identity {
  user: string;
  groups: readonly string[];
  kubeconfigPath: string;
  kubeConfig: KubeConfig;
}

export class LocalControlPlane {
  readonly dir: string;
  private state: ControlPlaneState;
  private readonly children = new Map<ComponentName, ChildProcess>();
  private readonly detached: boolean;
  private readonly readyTimeoutMs: number;
  private readonly progress: Progress;
  private adminConfig: KubeConfig | undefined;
  private readonly replicas = new Set<ApiServerReplica>();

  private constructor(dir: string, state: ControlPlaneState, options: ControlPlaneOptions) {
    this.dir = dir;
    this.state = state;
    this.detached = options.detached ?? false;
    this.readyTimeoutMs = options.readyTimeoutMs ?? 120_000;
    this.progress = options.progress ?? (() => {});
  }

  /** Starts a control plane, creating its directory, certificates and ports on first use. */
  static async start(options: ControlPlaneOptions = {}): Promise<LocalControlPlane> {
    const ownsDirectory = options.dir === undefined;
    const dir = options.dir ?? (await mkdtemp(join(tmpdir(), "stratus-cp-")));
    await mkdir(dir, { recursive: true });
    let state = await readState(dir);
    if (state && runningComponents(dir, state).length > 0) {
      const pids = livePids(dir, state);
      throw new ControlPlaneSetupError(
        `A control plane is already running from ${dir} (pids ${runningComponents(dir, state)
          .map((c) => pids[c])
          .join(", ")}). Stop it first with \`stratus cluster stop\`.`,
      );
    }
    const binaries =
      options.binaries ?? state?.binaries ?? (await ensureBinaries({ ...optionalProgress(options) }));
    if (!state) {
      state = {
        ports: { etcdClient: await freePort(), etcdPeer: await freePort(), apiserver: await freePort() },
        binaries,
        pids: {},
        unsafeNoFsync: options.unsafeNoFsync ?? false,
        ownsDirectory,
      };
    }
    state.binaries = binaries;
    const controlPlane = new LocalControlPlane(dir, state, options);
    try {
      await controlPlane.writeCredentials();
      await controlPlane.startComponents();
    } catch (error) {
      await controlPlane.stop().catch(() => {});
      throw error;
    }
    return controlPlane;
  }

  /** Attaches to a control plane started earlier (possibly by another process) from its directory. */
  static async open(dir: string, options: Omit<ControlPlaneOptions, "dir"> = {}): Promise<LocalControlPlane> {
    const state = await readState(dir);
    if (!state) throw new ControlPlaneSetupError(`No control plane was ever started from ${dir}.`);
    return new LocalControlPlane(dir, state, options);
  }

  get server(): string {
    return `https://127.0.0.1:${this.state.ports.apiserver}`;
  }

  /** etcd's client URL (tests use it to compact history). */
  get etcdEndpoint(): string {
    return `http://127.0.0.1:${this.state.ports.etcdClient}`;
  }

  get kubeconfigPath(): string {
    return join(this.dir, "kubeconfigs", "admin.kubeconfig");
  }

  get binaries(): ControlPlaneBinaries {
    return this.state.binaries;
  }

  /** A client configuration for `admin` in `system:masters`. */
  get kubeConfig(): KubeConfig {
    this.adminConfig ??= loadKubeConfig(this.kubeconfigPath);
    return this.adminConfig;
  }

  get caPem(): string {
    return readFileSync(join(this.dir, "pki", "ca.crt"), "utf8");
  }

  pid(component: ComponentName): number | undefined {
    return livePids(this.dir, this.state)[component];
  }

  logPath(component: ComponentName): string {
    return join(this.dir, "logs", `${component}.log`);
  }

  running(): ComponentName[] {
    return runningComponents(this.dir, this.state);
  }

  /** What its supervisor records, when detached (`stratus up`, `stratus cluster start`). */
  supervision(): Supervision<ComponentName> {
    return readSupervision(supervisorDir(this.dir), (pid, component) =>
      isOurProcess(pid, this.state.binaries, component),
    );
  }

  /**
   * Issues a client certificate `CN=user, O=group...` signed by the cluster CA and writes a
   * kubeconfig for it, so tests and components can run with narrow RBAC.
   */
  async issueIdentity(user: string, groups: readonly string[] = []): Promise<Identity> {
    const fileName = [user, ...groups].join("_").replace(/[^A-Za-z0-9_.-]+/g, "-");
    const kubeconfigPath = await writeClientKubeconfig(this.dir, this.server, fileName, user, groups);
    return { user, groups, kubeconfigPath, kubeConfig: loadKubeConfig(kubeconfigPath) };
  }

  /** Starts the components that are not running, in dependency order, and waits until each is ready. */
  async startComponents(components: readonly ComponentName[] = COMPONENTS): Promise<void> {
    if (this.detached && components.length === COMPONENTS.length && this.running().length === 0)
      return this.startSupervised();
    for (const component of COMPONENTS) {
      if (!components.includes(component) || this.running().includes(component)) continue;
      this.progress(`starting ${component}`);
      const started = Date.now();
      await this.spawnComponent(component);
      await this.waitReady(component);
      this.progress(`${component} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  }

  /** Stops components (all by default), in reverse dependency order; their data stays. */
  async stopComponents(components: readonly ComponentName[] = COMPONENTS): Promise<void> {
    if (components.includes("kube-apiserver")) for (const replica of this.replicas) await replica.stop();
    if (existsSync(supervisorDir(this.dir))) {
      // Its supervisor would start one stopped alone again: the three stop together.
      if (components.length !== COMPONENTS.length)
        throw new ControlPlaneSetupError(`the control plane in ${this.dir} is supervised: stop it whole`);
      await stopSupervision(supervisorDir(this.dir), 10_000);
    }
    for (const component of [...COMPONENTS].reverse()) {
      if (!components.includes(component)) continue;
      const pid = this.state.pids[component];
      if (pid === undefined) continue;
      await terminate(pid, this.children.get(component));
      this.children.delete(component);
      delete this.state.pids[component];
      await this.saveState();
    }
  }

  /** Stops every process; a temporary directory is removed with everything in it. */
  async stop(): Promise<void> {
    await this.stopComponents();
    if (this.state.ownsDirectory) await rm(this.dir, { recursive: true, force: true });
  }

  /** Stops every process and deletes the directory, data included. */
  async destroy(): Promise<void> {
    await this.stopComponents();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Creates CAs, serving and client certificates and kubeconfigs once; a restart reuses them. */
  private async writeCredentials(): Promise<void> {
    await writeCredentials(this.dir, this.server, this.progress);
    await this.saveState();
  }

  /**
   * Detached (`stratus up`, `stratus cluster start`): a supervisor runs the three and starts again
   * any that exits. They start together: kube-apiserver waits for etcd as after any etcd restart.
   */
  private async startSupervised(): Promise<void> {
    const components = COMPONENTS.map((component) => {
      const [command, args] = commandLine(this.dir, this.state, component);
      return { name: component, command, args, cwd: this.dir, logPath: this.logPath(component) };
    });
    const dir = supervisorDir(this.dir);
    await mkdir(dir, { recursive: true });
    await stopSupervision(dir, 10_000); // a supervisor whose every component is backing off
    await rm(supervisorPaths(dir).state, { force: true }); // restarts count from this start
    this.progress(`starting ${COMPONENTS.join(", ")} under a supervisor`);
    const started = Date.now();
    const supervisor = await startSupervisor(dir, {
      components,
      backoff: DEFAULT_BACKOFF,
      stopGraceMs: 10_000,
    });
    for (const component of COMPONENTS) {
      // A component may exit while another is not ready yet; the supervisor is what must live.
      await waitUntil(
        component,
        () => runningSupervisor(dir),
        this.logPath(component),
        readinessProbe(component, this),
        this.readyTimeoutMs,
      );
      this.progress(
        `${component} ready in ${((Date.now() - started) / 1000).toFixed(1)} s (supervisor pid ${supervisor})`,
      );
    }
  }

  private async spawnComponent(component: ComponentName): Promise<void> {
    const [command, args] = commandLine(this.dir, this.state, component);
    const child = await launch(command, args, this.dir, this.logPath(component), component);
    if (this.detached) child.unref();
    else this.children.set(component, child);
    this.state.pids[component] = child.pid as number;
    await this.saveState();
  }

  private async waitReady(component: ComponentName): Promise<void> {
    const probe = readinessProbe(component, this);
    await waitUntil(
      component,
      () => this.state.pids[component],
      this.logPath(component),
      probe,
      this.readyTimeoutMs,
    );
  }

  /**
   * Starts a second kube-apiserver on the same etcd, as in an HA control plane: a client can be
   * cut off from (or frozen on) one API server while others keep changing the cluster.
   */
  async startApiServerReplica(): Promise<ApiServerReplica> {
    const port = await freePort();
    const name = `kube-apiserver-${port}`;
    const logPath = join(this.dir, "logs", `${name}.log`);
    const server = `https://127.0.0.1:${port}`;
    const kubeconfigPath = join(this.dir, "kubeconfigs", `admin-${port}.kubeconfig`);
    await writeFile(
      kubeconfigPath,
      (await readFile(this.kubeconfigPath, "utf8")).replace(this.server, server),
      { mode: 0o600 },
    );
    const replica = new ApiServerReplica(server, kubeconfigPath, async () => {
      const [command, args] = commandLine(this.dir, this.state, "kube-apiserver", port);
      const child = await launch(command, args, this.dir, logPath, name);
      await waitUntil(
        name,
        () => child.pid,
        logPath,
        () => isApiServerReady(server, this.caPem),
        this.readyTimeoutMs,
      );
      return child;
    });
    this.replicas.add(replica);
    await replica.start();
    return replica;
  }

  private async saveState(): Promise<void> {
    await saveState(this.dir, this.state);
  }
}

function optionalProgress(options: ControlPlaneOptions): { progress?: Progress } {
  return options.progress ? { progress: options.progress } : {};
}

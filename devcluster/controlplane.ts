// A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager,
// the way envtest runs them, plus the controller manager (garbage collection, namespace deletion,
// service-account tokens). Everything lives in one directory; the processes can be stopped and
// started again on the same data, and stop() leaves no process, port or temporary directory.
import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import { isAlive } from "../runtime/process-alive.ts";
import {
  type ControlPlaneBinaries,
  ControlPlaneSetupError,
  ensureBinaries,
  type Progress,
} from "./binaries.ts";
import { loadKubeConfig, renderKubeconfig } from "./kubeconfig.ts";
import {
  createCertificateAuthority,
  createServiceAccountSigningKey,
  issueCertificate,
  loadCertificateAuthority,
  type PemPair,
} from "./pki.ts";
import { launch, tail, terminate } from "./processes.ts";
import {
  DEFAULT_BACKOFF,
  readSupervision,
  readSupervisorState,
  runningSupervisor,
  type Supervision,
  startSupervisor,
  stopSupervision,
  supervisorPaths,
} from "./supervisor.ts";

export { isAlive, launch, tail, terminate };

export const COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager"] as const;
export type ComponentName = (typeof COMPONENTS)[number];

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

interface State {
  ports: { etcdClient: number; etcdPeer: number; apiserver: number };
  binaries: ControlPlaneBinaries;
  pids: Partial<Record<ComponentName, number>>;
  unsafeNoFsync: boolean;
  /** Whether stop() deletes the directory (it was created as a temporary one). */
  ownsDirectory: boolean;
}

const STATE_FILE = "state.json";

export class LocalControlPlane {
  readonly dir: string;
  private state: State;
  private readonly children = new Map<ComponentName, ChildProcess>();
  private readonly detached: boolean;
  private readonly readyTimeoutMs: number;
  private readonly progress: Progress;
  private adminConfig: KubeConfig | undefined;
  private readonly replicas = new Set<ApiServerReplica>();

  private constructor(dir: string, state: State, options: ControlPlaneOptions) {
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
    const kubeconfigPath = await this.writeClientKubeconfig(fileName, user, groups);
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

  private async pem(name: string): Promise<PemPair> {
    const pki = join(this.dir, "pki");
    return {
      certPem: await readFile(join(pki, `${name}.crt`), "utf8"),
      keyPem: await readFile(join(pki, `${name}.key`), "utf8"),
    };
  }

  /** Creates CAs, serving and client certificates and kubeconfigs once; a restart reuses them. */
  private async writeCredentials(): Promise<void> {
    const pki = join(this.dir, "pki");
    await mkdir(pki, { recursive: true, mode: 0o700 });
    await mkdir(join(this.dir, "kubeconfigs"), { recursive: true, mode: 0o700 });
    await mkdir(join(this.dir, "logs"), { recursive: true });
    if (!existsSync(join(pki, "sa.pub"))) {
      this.progress("generating certificates");
      const save = async (name: string, pair: PemPair) => {
        await writeFile(join(pki, `${name}.crt`), pair.certPem);
        await writeFile(join(pki, `${name}.key`), pair.keyPem, { mode: 0o600 });
      };
      const ca = await createCertificateAuthority("stratus-cluster-ca");
      const frontProxyCa = await createCertificateAuthority("stratus-front-proxy-ca");
      await save("ca", ca);
      await save("front-proxy-ca", frontProxyCa);
      await save(
        "apiserver",
        await issueCertificate(ca, {
          commonName: "kube-apiserver",
          usage: "server",
          dnsNames: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
          ipAddresses: ["127.0.0.1", "10.0.0.1"],
        }),
      );
      await save(
        "front-proxy-client",
        await issueCertificate(frontProxyCa, { commonName: "front-proxy-client", usage: "client" }),
      );
      const serviceAccountKey = await createServiceAccountSigningKey();
      await writeFile(join(pki, "sa.key"), serviceAccountKey.privateKeyPem, { mode: 0o600 });
      await writeFile(join(pki, "sa.pub"), serviceAccountKey.publicKeyPem);
      // kube-controller-manager runs as its own user, which the bootstrap RBAC policy provides for.
      await this.writeClientKubeconfig("kube-controller-manager", "system:kube-controller-manager", []);
      await this.writeClientKubeconfig("admin", "admin", ["system:masters"]);
    }
    await this.saveState();
  }

  /** Issues a client certificate for `CN=user, O=groups` and writes kubeconfigs/<fileName>.kubeconfig. */
  private async writeClientKubeconfig(
    fileName: string,
    user: string,
    groups: readonly string[],
  ): Promise<string> {
    const ca = await this.pem("ca");
    const pair = await issueCertificate(await loadCertificateAuthority(ca), {
      commonName: user,
      organizations: groups,
      usage: "client",
    });
    const path = join(this.dir, "kubeconfigs", `${fileName}.kubeconfig`);
    const kubeconfig = renderKubeconfig({
      server: this.server,
      caPem: ca.certPem,
      clientCertPem: pair.certPem,
      clientKeyPem: pair.keyPem,
      name: user,
    });
    await writeFile(path, kubeconfig, { mode: 0o600 });
    return path;
  }

  private commandLine(
    component: ComponentName,
    apiserverPort = this.state.ports.apiserver,
  ): [string, string[]] {
    const { ports, binaries } = this.state;
    const pki = (file: string) => join(this.dir, "pki", file);
    switch (component) {
      case "etcd":
        return [
          binaries.etcd,
          [
            `--name=stratus`,
            `--data-dir=${join(this.dir, "etcd-data")}`,
            `--listen-client-urls=http://127.0.0.1:${ports.etcdClient}`,
            `--advertise-client-urls=http://127.0.0.1:${ports.etcdClient}`,
            `--listen-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
            `--initial-advertise-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
            `--initial-cluster=stratus=http://127.0.0.1:${ports.etcdPeer}`,
            ...(this.state.unsafeNoFsync ? ["--unsafe-no-fsync"] : []),
          ],
        ];
      case "kube-apiserver":
        return [
          binaries.kubeApiserver,
          [
            `--etcd-servers=http://127.0.0.1:${ports.etcdClient}`,
            "--bind-address=127.0.0.1",
            // An explicit address: the machine may have no default route to derive one from.
            "--advertise-address=127.0.0.1",
            `--secure-port=${apiserverPort}`,
            `--cert-dir=${join(this.dir, "pki")}`,
            `--tls-cert-file=${pki("apiserver.crt")}`,
            `--tls-private-key-file=${pki("apiserver.key")}`,
            `--client-ca-file=${pki("ca.crt")}`,
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            `--service-account-issuer=https://127.0.0.1:${ports.apiserver}`,
            `--service-account-key-file=${pki("sa.pub")}`,
            `--service-account-signing-key-file=${pki("sa.key")}`,
            "--service-cluster-ip-range=10.0.0.0/24",
            // Loopback Endpoints for the kubernetes Service would be rejected in a loop.
            "--endpoint-reconciler-type=none",
            `--requestheader-client-ca-file=${pki("front-proxy-ca.crt")}`,
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            `--proxy-client-cert-file=${pki("front-proxy-client.crt")}`,
            `--proxy-client-key-file=${pki("front-proxy-client.key")}`,
          ],
        ];
      case "kube-controller-manager":
        return [
          binaries.kubeControllerManager,
          [
            `--kubeconfig=${join(this.dir, "kubeconfigs", "kube-controller-manager.kubeconfig")}`,
            `--service-account-private-key-file=${pki("sa.key")}`,
            `--root-ca-file=${pki("ca.crt")}`,
            `--cluster-signing-cert-file=${pki("ca.crt")}`,
            `--cluster-signing-key-file=${pki("ca.key")}`,
            "--use-service-account-credentials",
            "--controllers=*",
            // Accounts' limits on Stratus kinds (ResourceQuota count/<kind>.stratus.io): a quota
            // written before the quota controller discovered the CRDs (30 s after start) is counted
            // at its next full resync, every 30 s here rather than 5 min.
            "--resource-quota-sync-period=30s",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
          ],
        ];
    }
  }

  /**
   * Detached (`stratus up`, `stratus cluster start`): a supervisor runs the three and starts again
   * any that exits. They start together: kube-apiserver waits for etcd as after any etcd restart.
   */
  private async startSupervised(): Promise<void> {
    const components = COMPONENTS.map((component) => {
      const [command, args] = this.commandLine(component);
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
      await this.waitUntil(
        component,
        () => runningSupervisor(dir),
        this.logPath(component),
        this.readinessProbe(component),
      );
      this.progress(
        `${component} ready in ${((Date.now() - started) / 1000).toFixed(1)} s (supervisor pid ${supervisor})`,
      );
    }
  }

  private async spawnComponent(component: ComponentName): Promise<void> {
    const [command, args] = this.commandLine(component);
    const child = await launch(command, args, this.dir, this.logPath(component), component);
    if (this.detached) child.unref();
    else this.children.set(component, child);
    this.state.pids[component] = child.pid as number;
    await this.saveState();
  }

  private async waitReady(component: ComponentName): Promise<void> {
    const probe = this.readinessProbe(component);
    await this.waitUntil(component, () => this.state.pids[component], this.logPath(component), probe);
  }

  private readinessProbe(component: ComponentName): () => Promise<boolean> {
    const { ports } = this.state;
    return {
      etcd: async () => {
        const response = await fetch(`http://127.0.0.1:${ports.etcdClient}/health`);
        return response.ok && ((await response.json()) as { health?: string }).health === "true";
      },
      "kube-apiserver": () => isApiServerReady(this.server, this.caPem),
      // The service-account controller creating `default` proves the controller manager works.
      "kube-controller-manager": async () => {
        await this.kubeConfig
          .makeApiClient(CoreV1Api)
          .readNamespacedServiceAccount({ name: "default", namespace: "default" });
        return true;
      },
    }[component];
  }

  /** Polls `probe` until it succeeds; fails at once, with the log's end, if the process died. */
  private async waitUntil(
    what: string,
    pid: () => number | undefined,
    logPath: string,
    probe: () => Promise<boolean>,
  ): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    for (;;) {
      const current = pid();
      if (current === undefined || !isAlive(current)) {
        throw new ControlPlaneSetupError(
          `${what} exited during start-up. The end of ${logPath}:\n${await tail(logPath, 20)}`,
        );
      }
      if (await probe().catch(() => false)) return;
      if (Date.now() > deadline) {
        throw new ControlPlaneSetupError(
          `${what} was not ready after ${this.readyTimeoutMs / 1000} s. The end of ${logPath}:\n${await tail(logPath, 20)}`,
        );
      }
      await sleep(250);
    }
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
      const [command, args] = this.commandLine("kube-apiserver", port);
      const child = await launch(command, args, this.dir, logPath, name);
      await this.waitUntil(
        name,
        () => child.pid,
        logPath,
        () => isApiServerReady(server, this.caPem),
      );
      return child;
    });
    this.replicas.add(replica);
    await replica.start();
    return replica;
  }

  private async saveState(): Promise<void> {
    await writeFile(join(this.dir, STATE_FILE), `${JSON.stringify(this.state, null, 2)}\n`);
  }
}

/** An extra kube-apiserver of a LocalControlPlane; stop/start keep its port, pause freezes it. */
export class ApiServerReplica {
  readonly server: string;
  /** An admin kubeconfig that talks to this replica only. */
  readonly kubeconfigPath: string;
  private readonly launchProcess: () => Promise<ChildProcess>;
  private child: ChildProcess | undefined;

  constructor(server: string, kubeconfigPath: string, launchProcess: () => Promise<ChildProcess>) {
    this.server = server;
    this.kubeconfigPath = kubeconfigPath;
    this.launchProcess = launchProcess;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    if (this.child?.pid !== undefined && isAlive(this.child.pid)) return;
    this.child = await this.launchProcess();
  }

  async stop(): Promise<void> {
    this.resume(); // a stopped process cannot act on SIGTERM
    if (this.child?.pid !== undefined) await terminate(this.child.pid, this.child);
    this.child = undefined;
  }

  /** SIGSTOP: connections stay open but nothing is answered, as with a hung server. */
  pause(): void {
    if (this.child?.pid !== undefined) process.kill(this.child.pid, "SIGSTOP");
  }

  resume(): void {
    if (this.child?.pid !== undefined && isAlive(this.child.pid)) process.kill(this.child.pid, "SIGCONT");
  }
}

async function isApiServerReady(server: string, caPem: string): Promise<boolean> {
  return (await httpsGet(`${server}/readyz`, caPem)).status === 200;
}

function optionalProgress(options: ControlPlaneOptions): { progress?: Progress } {
  return options.progress ? { progress: options.progress } : {};
}

async function readState(dir: string): Promise<State | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, STATE_FILE), "utf8")) as State;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new ControlPlaneSetupError(
      `${join(dir, STATE_FILE)} is damaged (${(error as Error).message}); delete ${dir} to start afresh.`,
    );
  }
}

function runningComponents(dir: string, state: State): ComponentName[] {
  const pids = livePids(dir, state);
  return COMPONENTS.filter((component) => {
    const pid = pids[component];
    return pid !== undefined && isOurProcess(pid, state.binaries, component);
  });
}

/** Where a detached control plane's supervisor keeps its spec, state and pid file. */
const supervisorDir = (dir: string) => join(dir, "supervisor");

/** The pids recorded at start, or, for a supervised control plane, those its supervisor runs now. */
function livePids(dir: string, state: State): Partial<Record<ComponentName, number>> {
  const supervised = readSupervisorState(supervisorDir(dir))?.components;
  if (!supervised) return state.pids;
  return Object.fromEntries(
    COMPONENTS.flatMap((component) => {
      const pid = supervised[component]?.pid;
      return pid == null ? [] : [[component, pid]];
    }),
  );
}

/** A pid from an old state file may since belong to another program; check what it runs. */
function isOurProcess(pid: number, binaries: ControlPlaneBinaries, component: ComponentName): boolean {
  if (!isAlive(pid)) return false;
  const binary = {
    etcd: binaries.etcd,
    "kube-apiserver": binaries.kubeApiserver,
    "kube-controller-manager": binaries.kubeControllerManager,
  }[component];
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] === binary;
  } catch {
    return false;
  }
}

/** A port the kernel just handed out on loopback; the small race before use is acceptable on one machine. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port")),
      );
    });
  });
}

export function httpsGet(url: string, caPem: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: caPem, timeout: 5_000 }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`timeout: GET ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

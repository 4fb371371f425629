// The local cloud `stratus up` runs on one machine: the operator, the API component and one host
// agent as background processes next to the local control plane, run by a supervisor that starts
// again any that exits (devcluster/supervisor.ts), the cloud seeded with a zone,
// offerings, the tiny template and a default network, and an API key for CloudStack clients.
// `stratus down` stops them and takes the host out of service (no domain, network or pool is left
// in libvirt); the API objects and disk files stay, so the next `stratus up` brings the VMs back.
import { type ChildProcess, execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { KubeConfig } from "@kubernetes/client-node";
import { API_KEY_LABEL, SECRET } from "../apiserver/api.ts";
import { type Host, type Network, Resources } from "../crds/index.ts";
import {
  isAlreadyExists,
  isNotFound,
  KubeClient,
  type KubeObject,
  NAMESPACE,
  type ResourceType,
} from "../runtime/client.ts";
import { writeConsoleKeys } from "../runtime/console-ticket.ts";
import { pollUntil } from "../runtime/time.ts";
import { prepareSubresources, registerSubresources } from "./aggregation.ts";
import { ControlPlaneSetupError, type Progress } from "./binaries.ts";
import { freePort, isAlive, launch, tail, terminate } from "./controlplane.ts";
import { canRunQemu, ensureLibvirtDaemons, libvirtAnswers, stopLibvirtDaemons } from "./libvirt.ts";
import {
  DEFAULT_BACKOFF,
  readSupervision,
  runningSupervisor,
  type SupervisedCommand,
  type Supervision,
  startSupervisor,
  stopSupervision,
  supervisedProcesses,
  supervisorPaths,
} from "./supervisor.ts";

const run = promisify(execFile);
const PROJECT_ROOT = fileURLToPath(new URL("..", import.meta.url));

export const CLOUD_PROCESSES = ["operator", "apiserver", "host-agent"] as const;
export type CloudProcess = (typeof CLOUD_PROCESSES)[number];
const SCRIPTS: Record<CloudProcess, string> = {
  operator: "operator/main.ts",
  apiserver: "apiserver/main.ts",
  "host-agent": "host-agent/main.ts",
};

/** The names `stratus up` seeds; `first-vm.yaml` and the printed commands use them. */
export const SEED = {
  zone: "local",
  namespace: "default",
  network: "default",
  serviceOffering: "tiny",
  diskOffering: "small-disk",
  template: "tiny-linux",
  keysNamespace: "stratus-api-keys",
  apiKeySecret: "stratus-up-admin",
  fieldManager: "stratus-up",
  /**
   * The host's CPU overcommit (CloudStack's cpu.overprovisioning.factor): a laptop's few cores
   * would otherwise take only as many 1-vCPU VMs as it has cores. Set when the Host is first made.
   */
  cpuOvercommitRatio: 4,
} as const;

interface CloudState {
  libvirtUri: string;
  /** libvirtd/virtlogd were started by `stratus up`, so `stratus down` stops them. */
  startedLibvirtDaemons: boolean;
  hostName: string;
  /** The admin kubeconfig: the agent's teardown reads the cluster's identity with it. */
  kubeconfigPath?: string;
  apiEndpoint: string;
  /** Directories of the host agent's pool, image cache and console sockets. */
  hostDirs: string[];
  /** Fixed for the cloud's life, so a restarted component answers where its predecessor did. */
  healthPorts: Partial<Record<CloudProcess, number>>;
  /** Written by `stratus up` before it supervised its processes; stopped like the rest. */
  processes?: Partial<Record<CloudProcess, { pid: number }>>;
}

/** Stops a component within this grace, then kills it (the agent shuts its work down cleanly). */
const STOP_GRACE_MS = 30_000;

export interface CloudAccess {
  apiEndpoint: string;
  apiKey: string;
  secretKey: string;
  libvirtUri: string;
  /** A VirtualMachine manifest on the default network, for the first `kubectl apply`. */
  firstVmManifest: string;
}

export class LocalCloud {
  readonly dir: string;
  private readonly state: CloudState;
  private readonly progress: Progress;

  private constructor(dir: string, state: CloudState, progress: Progress) {
    this.dir = dir;
    this.state = state;
    this.progress = progress;
  }

  /** The cloud's state in `dir`, whether or not anything runs. */
  static async open(dir: string, progress: Progress = () => {}): Promise<LocalCloud | undefined> {
    try {
      return new LocalCloud(dir, JSON.parse(await readFile(join(dir, "state.json"), "utf8")), progress);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new ControlPlaneSetupError(`${join(dir, "state.json")} is damaged: ${(error as Error).message}`);
    }
  }

  /** Starts the cloud's processes against a running control plane and seeds it. */
  static async up(options: {
    dir: string;
    kubeConfig: KubeConfig;
    kubeconfigPath: string;
    progress: Progress;
  }) {
    const { dir, progress } = options;
    const previous = await LocalCloud.open(dir, progress);
    if (previous) await previous.stopProcesses();
    await mkdir(join(dir, "logs"), { recursive: true });

    progress("building or reusing the tiny guest (test/images/build-tiny-guest.sh)");
    const guest = await buildTinyGuest();
    const hypervisor = await chooseHypervisor(progress);
    const hostName = hostname();
    const hostDirs = hypervisor.uri.startsWith("test:")
      ? ["pool", "cache", "console"].map((d) => join(dir, "host", d))
      : // Under qemu:///system QEMU runs as libvirt-qemu and must reach the disks: the agent's
        // defaults under /var/lib and /run, not the (private) state directory.
        [
          `/var/lib/stratus/pools/${hostName}`,
          `/var/lib/stratus/cache/${hostName}`,
          `/run/stratus/console/${hostName}`,
        ];
    // The zone's secondary storage: snapshots and disks moving between pools are kept there.
    const secondary = hypervisor.uri.startsWith("test:")
      ? join(dir, "secondary")
      : "/var/lib/stratus/secondary";
    const cloud = new LocalCloud(
      dir,
      {
        libvirtUri: hypervisor.uri,
        startedLibvirtDaemons: hypervisor.startedDaemons || (previous?.state.startedLibvirtDaemons ?? false),
        hostName,
        kubeconfigPath: options.kubeconfigPath,
        apiEndpoint: "",
        hostDirs,
        healthPorts: {},
      },
      progress,
    );
    const client = new KubeClient(options.kubeConfig);
    try {
      for (const name of ["stratus-system", SEED.keysNamespace])
        await client.apply(NAMESPACE, { metadata: { name } }, { fieldManager: SEED.fieldManager });
      const apiPort = await freePortPreferring(8080);
      cloud.state.apiEndpoint = `http://127.0.0.1:${apiPort}/client/api`;
      const kubeconfig = `--kubeconfig=${options.kubeconfigPath}`;
      // The consoles: the agent relays them to the API component, which serves them (and
      // start/stop/restart) to kubectl and `stratus console` through the aggregated API.
      const consoleKeys = await writeConsoleKeys(dir);
      const subresources = await prepareSubresources({ namespace: "stratus-system", dir });
      const [pool, cache, consoleDir] = hostDirs as [string, string, string];
      // Made before its agent registers it, so the overcommit is there for the first placement;
      // an existing Host keeps what the administrator set.
      await client
        .create(Resources.hosts, {
          apiVersion: "stratus.io/v1alpha1",
          kind: "Host",
          metadata: { name: hostName },
          spec: { zone: SEED.zone, cpuOvercommitRatio: SEED.cpuOvercommitRatio },
        })
        .catch((error: unknown) => (isAlreadyExists(error) ? undefined : Promise.reject(error)));
      await cloud.supervise({
        operator: [kubeconfig, `--identity=${hostName}-operator`],
        apiserver: [
          kubeconfig,
          `--listen=127.0.0.1:${apiPort}`,
          `--keys-namespace=${SEED.keysNamespace}`,
          ...subresources.args,
          `--console-key-file=${consoleKeys.privateKeyFile}`,
        ],
        "host-agent": [
          kubeconfig,
          `--host-name=${hostName}`,
          `--zone=${SEED.zone}`,
          `--libvirt-uri=${hypervisor.uri}`,
          `--pool-path=${pool}`,
          `--cache-dir=${cache}`,
          `--console-dir=${consoleDir}`,
          "--console-address=127.0.0.1:0",
          `--console-key-file=${consoleKeys.publicKeyFile}`,
        ],
      });
      await cloud.waitHealthy("operator");
      await cloud.waitHealthy("apiserver");
      progress("registering the aggregated API subresources.stratus.io (consoles, start/stop/restart)");
      await registerSubresources(client, subresources, SEED.fieldManager);
      await cloud.waitHealthy("host-agent");
      progress(
        `seeding zone "${SEED.zone}", offerings, template "${SEED.template}", network "${SEED.network}"`,
      );
      await seed(client, guest, secondary);
      const access = await issueApiKey(client, {
        name: SEED.apiKeySecret,
        keysNamespace: SEED.keysNamespace,
        user: "admin",
        groups: ["system:masters"],
        account: SEED.namespace,
      });
      progress(`waiting for host ${hostName} to be Ready`);
      await waitUntil(`host ${hostName} to be Ready`, 120_000, async () => {
        const host = await client.get<Host>(Resources.hosts, hostName).catch(() => undefined);
        return host?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
      });
      await waitUntil(`network "${SEED.network}" to be Ready`, 60_000, async () => {
        const network = await client
          .get<Network>(Resources.networks, SEED.network, SEED.namespace)
          .catch(() => undefined);
        return network?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
      });
      const firstVmManifest = join(dir, "first-vm.yaml");
      await writeFile(firstVmManifest, FIRST_VM);
      return {
        cloud,
        access: {
          ...access,
          apiEndpoint: cloud.state.apiEndpoint,
          libvirtUri: hypervisor.uri,
          firstVmManifest,
        },
      };
    } finally {
      await client.close();
    }
  }

  running(): CloudProcess[] {
    return CLOUD_PROCESSES.filter((name) => this.pid(name) !== undefined);
  }

  pid(name: CloudProcess): number | undefined {
    const pid = this.supervision().components[name]?.pid ?? this.state.processes?.[name]?.pid;
    return pid != null && isStratusProcess(pid, name) ? pid : undefined;
  }

  /** What the supervisor records per component; one whose process is gone shows as stopped. */
  supervision(): Supervision<CloudProcess> {
    return readSupervision(this.supervisorDir, isStratusProcess);
  }

  private get supervisorDir(): string {
    return join(this.dir, "supervisor");
  }

  get libvirtUri(): string {
    return this.state.libvirtUri;
  }

  get apiEndpoint(): string {
    return this.state.apiEndpoint;
  }

  logPath(name: CloudProcess): string {
    return join(this.dir, "logs", `${name}.log`);
  }

  /**
   * Stops the processes, then takes the host out of service (the agent's --teardown) and stops the
   * libvirt daemons `stratus up` started. With `purge`, the disks and image cache go too.
   */
  async down(options: { purge: boolean }): Promise<void> {
    await this.stopProcesses();
    this.progress(`removing the Stratus domains, networks and pool from ${this.state.libvirtUri}`);
    if (this.state.libvirtUri.startsWith("qemu:") && !(await libvirtAnswers())) {
      this.progress("libvirtd is not running: nothing to remove from it");
    } else if (!this.state.libvirtUri.startsWith("test:")) {
      // The test driver's state lives in the agent's process: it went with it.
      const { hostName, kubeconfigPath } = this.state;
      if (!kubeconfigPath) this.progress("no kubeconfig recorded by `stratus up`: leaving libvirt as it is");
      else
        this.progress(
          await tearDownHost(this.state.libvirtUri, 10, { hostName, kubeconfig: kubeconfigPath }).catch(
            (error: Error) =>
              `could not take the host out of service (libvirt left as it is): ${error.message}`,
          ),
        );
    }
    if (this.state.startedLibvirtDaemons) {
      this.progress("stopping libvirtd, virtlogd and virtlockd (stratus up started them)");
      await stopLibvirtDaemons();
      this.state.startedLibvirtDaemons = false;
    }
    if (options.purge)
      for (const path of this.state.hostDirs) await rm(path, { recursive: true, force: true });
    await this.save();
  }

  private async stopProcesses(): Promise<void> {
    const supervisor = runningSupervisor(this.supervisorDir);
    if (supervisor !== undefined)
      this.progress(`stopping the supervisor (pid ${supervisor}) and its components`);
    else if (supervisedProcesses(this.supervisorDir).length > 0)
      this.progress("stopping the components a stopped or killed supervisor left running");
    await stopSupervision(this.supervisorDir, STOP_GRACE_MS);
    for (const name of CLOUD_PROCESSES) {
      const pid = this.pid(name); // only an unsupervised one, from an older `stratus up`, is left
      if (pid !== undefined) await terminate(pid, undefined, STOP_GRACE_MS);
    }
    delete this.state.processes;
    await this.save();
  }

  /**
   * Hands the components to a new supervisor, which starts them in this order (the agent last)
   * and stops them in the reverse one, so the agent never sees the control plane's components vanish.
   */
  private async supervise(args: Record<CloudProcess, string[]>): Promise<void> {
    const components: SupervisedCommand[] = [];
    for (const name of CLOUD_PROCESSES) {
      const healthPort = await freePort();
      this.state.healthPorts[name] = healthPort;
      components.push({
        name,
        command: process.execPath,
        args: [join(PROJECT_ROOT, SCRIPTS[name]), ...args[name], `--health-address=127.0.0.1:${healthPort}`],
        cwd: PROJECT_ROOT,
        logPath: this.logPath(name),
      });
    }
    await this.save();
    await mkdir(this.supervisorDir, { recursive: true });
    // A new cloud's restarts count from zero (a start-up crash is told by its first restart).
    await rm(supervisorPaths(this.supervisorDir).state, { force: true });
    const pid = await startSupervisor(this.supervisorDir, {
      components,
      backoff: DEFAULT_BACKOFF,
      stopGraceMs: STOP_GRACE_MS,
    });
    this.progress(`supervisor started (pid ${pid}): a component that exits is started again`);
  }

  /** Waits for /healthz; a component that exits during start-up fails `stratus up` with its log. */
  private async waitHealthy(name: CloudProcess): Promise<void> {
    this.progress(`starting ${name}`);
    const healthz = `http://127.0.0.1:${this.state.healthPorts[name]}/healthz`;
    await waitUntil(`${name} to serve /healthz`, 60_000, async () => {
      if ((this.supervision().components[name]?.restarts ?? 0) > 0)
        throw new ControlPlaneSetupError(
          `${name} exited during start-up (its supervisor tries again; \`stratus down\` stops it). ` +
            `The end of ${this.logPath(name)}:\n${await tail(this.logPath(name), 20)}`,
        );
      return (await fetch(healthz).catch(() => undefined))?.ok ?? false;
    });
  }

  private async save(): Promise<void> {
    await writeFile(join(this.dir, "state.json"), `${JSON.stringify(this.state, null, 2)}\n`);
  }
}

export interface LaunchedComponent {
  child: ChildProcess;
  pid: number;
  healthPort: number;
  /** Resolves once /healthz answers; rejects with the end of the log if the process exits first. */
  ready: Promise<void>;
}

/**
 * Starts a Stratus process (`operator/main.ts`, …) on this Node, in its own process group, output
 * appended to `logPath`, with a health port of its own.
 */
export async function launchComponent(options: {
  script: string;
  args: string[];
  logPath: string;
  env?: NodeJS.ProcessEnv;
}): Promise<LaunchedComponent> {
  const healthPort = await freePort();
  const child = await launch(
    process.execPath,
    [join(PROJECT_ROOT, options.script), ...options.args, `--health-address=127.0.0.1:${healthPort}`],
    PROJECT_ROOT,
    options.logPath,
    options.script,
    options.env,
  );
  const pid = child.pid as number;
  const ready = waitUntil(`${options.script} to serve /healthz`, 60_000, async () => {
    if (!isAlive(pid))
      throw new ControlPlaneSetupError(
        `${options.script} exited during start-up. The end of ${options.logPath}:\n${await tail(options.logPath, 20)}`,
      );
    return (await fetch(`http://127.0.0.1:${healthPort}/healthz`).catch(() => undefined))?.ok ?? false;
  });
  return { child, pid, healthPort, ready };
}

/**
 * `stratus-host-agent --teardown` on this machine: the Stratus domains (shut down within
 * `shutdownGraceSeconds`), networks and pool leave libvirt. Returns what the agent says it removed.
 */
export async function tearDownHost(
  libvirtUri: string,
  shutdownGraceSeconds: number,
  agent: { hostName: string; kubeconfig: string },
): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    [
      join(PROJECT_ROOT, SCRIPTS["host-agent"]),
      "--teardown",
      `--libvirt-uri=${libvirtUri}`,
      `--shutdown-grace=${shutdownGraceSeconds}`,
      `--host-name=${agent.hostName}`,
      `--kubeconfig=${agent.kubeconfig}`,
    ],
    { env: { ...process.env, STRATUS_LOG_LEVEL: "warn" } },
  );
  return stdout.trim();
}

/** Real QEMU through qemu:///system when this is root on a machine with libvirt and QEMU. */
async function chooseHypervisor(progress: Progress): Promise<{ uri: string; startedDaemons: boolean }> {
  if (!canRunQemu()) {
    progress(
      `${process.getuid?.() === 0 ? "libvirt or QEMU is not installed" : "not root"}: using libvirt's test driver ` +
        "(test:///default); VMs are simulated, nothing boots",
    );
    return { uri: "test:///default", startedDaemons: false };
  }
  const startedDaemons = await ensureLibvirtDaemons(progress);
  progress("using real QEMU through qemu:///system (software emulation)");
  return { uri: "qemu:///system", startedDaemons };
}

export async function buildTinyGuest(): Promise<{ kernel: string; initrd: string }> {
  try {
    const { stdout } = await run("bash", [join(PROJECT_ROOT, "test/images/build-tiny-guest.sh")], {
      maxBuffer: 1 << 20,
    });
    const directory = stdout.trim();
    return { kernel: join(directory, "vmlinuz"), initrd: join(directory, "initrd.gz") };
  } catch (error) {
    throw new ControlPlaneSetupError(
      `cannot build the tiny guest: ${((error as { stderr?: string }).stderr || (error as Error).message).trim()}`,
    );
  }
}

/**
 * Builds (or reuses) the real cloud image: Debian with cloud-init reading the config drive,
 * OpenSSH and a boot loader (test/images/build-cloud-image.sh; root, a few minutes the first time).
 * Returns the qcow2's path.
 */
export async function buildCloudImage(): Promise<string> {
  try {
    const { stdout } = await run("bash", [join(PROJECT_ROOT, "test/images/build-cloud-image.sh")], {
      maxBuffer: 16 << 20,
    });
    return stdout.trim().split("\n").pop() as string;
  } catch (error) {
    throw new ControlPlaneSetupError(
      `cannot build the cloud image: ${((error as { stderr?: string }).stderr || (error as Error).message).trim().slice(-2000)}`,
    );
  }
}

/** The catalogue and the default network, applied (so a second `stratus up` changes nothing). */
async function seed(
  client: KubeClient,
  guest: { kernel: string; initrd: string },
  secondary: string,
): Promise<void> {
  const apply = (type: ResourceType, object: KubeObject & { spec: object }) =>
    client.apply(
      type,
      { apiVersion: "stratus.io/v1alpha1", kind: type.kind, ...object },
      { fieldManager: SEED.fieldManager },
    );
  await apply(Resources.zones, {
    metadata: { name: SEED.zone },
    spec: {
      displayName: "Local zone (stratus up)",
      secondaryStorage: { path: secondary },
      // Clear of the control plane's service range (10.0.0.0/24); freeSubnet picks from here.
      guestCidrs: [LOCAL_GUEST_CIDR],
      vlanRange: "100-999",
    },
  });
  await apply(Resources.serviceOfferings, {
    metadata: { name: SEED.serviceOffering },
    spec: { displayName: "Tiny (1 vCPU, 128 MiB)", cpu: 1, memory: "128Mi" },
  });
  await apply(Resources.serviceOfferings, {
    metadata: { name: "small" },
    spec: { displayName: "Small (1 vCPU, 512 MiB)", cpu: 1, memory: "512Mi" },
  });
  await apply(Resources.diskOfferings, {
    metadata: { name: SEED.diskOffering },
    spec: { displayName: "Small disk (1 GiB)", size: "1Gi" },
  });
  await apply(Resources.templates, {
    metadata: { name: SEED.template },
    spec: {
      displayName: "Tiny Linux (busybox, boots in seconds)",
      osType: "Other Linux (64-bit)",
      source: { directBoot: { kernel: guest.kernel, initrd: guest.initrd, commandLine: "console=ttyS0" } },
    },
  });
  // A CIDR is fixed once chosen: an existing default network (and its VMs' addresses) stays as it is.
  const existing = await client
    .get<Network>(Resources.networks, SEED.network, SEED.namespace)
    .catch((error: unknown) => (isNotFound(error) ? undefined : Promise.reject(error)));
  await apply(Resources.networks, {
    metadata: { name: SEED.network, namespace: SEED.namespace },
    spec: { zone: SEED.zone, cidr: existing?.spec.cidr ?? (await freeSubnet()) },
  });
}

/**
 * A fresh API key Secret (in `keysNamespace`) for a Kubernetes user acting in `account` (a
 * namespace); `stratus up` issues one for `admin` in system:masters (CloudStack's root admin).
 */
export async function issueApiKey(
  client: KubeClient,
  key: { name: string; keysNamespace: string; user: string; groups: string[]; account: string },
): Promise<{ apiKey: string; secretKey: string }> {
  const apiKey = randomBytes(24).toString("base64url");
  const secretKey = randomBytes(32).toString("base64url");
  await client.apply(
    SECRET,
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: key.name, namespace: key.keysNamespace, labels: { [API_KEY_LABEL]: "true" } },
      stringData: { apiKey, secretKey, user: key.user, groups: key.groups.join(","), account: key.account },
    } as KubeObject & Record<string, unknown>,
    { fieldManager: SEED.fieldManager },
  );
  return { apiKey, secretKey };
}

/** Where the local zone's tenants put their networks. */
export const LOCAL_GUEST_CIDR = "10.240.0.0/12";

/** The first 10.250+n.0.0/24 no route on this machine covers (the default network's CIDR). */
export async function freeSubnet(): Promise<string> {
  const routes = await run("ip", ["-4", "route"]).then(
    (r) => r.stdout,
    () => "",
  );
  for (let second = 250; second < 255; second++) {
    if (!routes.includes(`10.${second}.`)) return `10.${second}.0.0/24`;
  }
  return "10.255.0.0/24";
}

async function freePortPreferring(port: number): Promise<number> {
  const free = await new Promise<boolean>((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
  return free ? port : freePort();
}

function isStratusProcess(pid: number, name: CloudProcess): boolean {
  if (!isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8")
      .split("\0")
      .includes(join(PROJECT_ROOT, SCRIPTS[name]));
  } catch {
    return false;
  }
}

/** Polls until `probe` holds; a timeout is a set-up error the CLI reports in one line. */
function waitUntil(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  return pollUntil(what, probe, {
    timeoutMs,
    intervalMs: 500,
    timeoutError: (message) => new ControlPlaneSetupError(message),
  });
}

const FIRST_VM = `# Written by \`stratus up\`: a VM from the tiny template on the default network.
apiVersion: stratus.io/v1alpha1
kind: VirtualMachine
metadata:
  name: first-vm
  namespace: ${SEED.namespace}
spec:
  zone: ${SEED.zone}
  serviceOffering: ${SEED.serviceOffering}
  template: ${SEED.template}
  nics:
    - name: eth0
      network: ${SEED.network}
`;

// The local cloud `stratus up` runs on one machine: the operator, the API component and one host
// agent as background processes next to the local control plane, run by a supervisor that starts
// again any that exits (devcluster/supervisor.ts), the cloud seeded with a zone,
// offerings, the tiny template and a default network, and an API key for CloudStack clients.
// `stratus down` stops them and takes the host out of service (no domain, network or pool is left
// in libvirt); the API objects and disk files stay, so the next `stratus up` brings the VMs back.
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import type { KubeConfig } from "@kubernetes/client-node";
import { type Host, type Network, Resources } from "../crds/index.ts";
import { isAlreadyExists, KubeClient, NAMESPACE } from "../runtime/client.ts";
import { writeConsoleKeys } from "../runtime/console-ticket.ts";
import { prepareSubresources, registerSubresources } from "./aggregation.ts";
import { ControlPlaneSetupError, type Progress } from "./binaries.ts";
import {
  CLOUD_PROCESSES,
  type CloudProcess,
  isStratusProcess,
  PROJECT_ROOT,
  SCRIPTS,
  tearDownHost,
  waitForSetup,
} from "./cloud-processes.ts";
import { FIRST_VM, issueApiKey, SEED, seed } from "./cloud-seed.ts";
import { buildTinyDisk, installedImage } from "./guest-images.ts";
import { chooseHypervisor, libvirtAnswers, stopLibvirtDaemons } from "./libvirt.ts";
import { freePort, freePortPreferring } from "./ports.ts";
import { tail, terminate } from "./processes.ts";
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

    progress("building or reusing the tiny guest's disk (test/images/build-tiny-disk.sh)");
    const tinyDisk = await buildTinyDisk();
    const hypervisor = await chooseHypervisor(progress);
    const hostName = hostname();
    const hostDirs = hypervisor.uri.startsWith("test:")
      ? ["pool", "cache", "console", "templates"].map((d) => join(dir, "host", d))
      : // Under qemu:///system QEMU runs as libvirt-qemu and must reach the disks: the agent's
        // defaults under /var/lib and /run, not the (private) state directory.
        [
          `/var/lib/stratus/pools/${hostName}`,
          `/var/lib/stratus/cache/${hostName}`,
          `/run/stratus/console/${hostName}`,
          "/var/lib/stratus/templates",
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
      const [pool, cache, consoleDir, templates] = hostDirs as [string, string, string, string];
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
      await seed(client, await installedImage(tinyDisk, templates), secondary);
      const access = await issueApiKey(client, {
        name: SEED.apiKeySecret,
        keysNamespace: SEED.keysNamespace,
        user: "admin",
        groups: ["system:masters"],
        account: SEED.namespace,
      });
      progress(`waiting for host ${hostName} to be Ready`);
      await waitForSetup(`host ${hostName} to be Ready`, 120_000, async () => {
        const host = await client.get<Host>(Resources.hosts, hostName).catch(() => undefined);
        return host?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
      });
      await waitForSetup(`network "${SEED.network}" to be Ready`, 60_000, async () => {
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
    await waitForSetup(`${name} to serve /healthz`, 60_000, async () => {
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

#!/usr/bin/env node
// The `stratus` command: brings up a local cloud and manages its control plane.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { KubeConfig } from "@kubernetes/client-node";
import { displayState } from "../crds/display-state.ts";
import { type Host, Resources, type VirtualMachine } from "../crds/index.ts";
import { installCustomResourceDefinitions } from "../crds/install.ts";
import { ControlPlaneSetupError, ensureBinaries, ensureTestTool } from "../devcluster/binaries.ts";
import { LocalCloud } from "../devcluster/cloud.ts";
import { CLOUD_PROCESSES } from "../devcluster/cloud-processes.ts";
import { LocalControlPlane } from "../devcluster/controlplane.ts";
import { COMPONENTS } from "../devcluster/controlplane-components.ts";
import { canRunQemu, ensureLibvirtDaemons } from "../devcluster/libvirt.ts";
import { ensureDebianPackages, PACKAGE_LISTS } from "../devcluster/packages.ts";
import { describeComponent } from "../devcluster/supervision-status.ts";
import type { Supervision } from "../devcluster/supervisor.ts";
import { ApiError, KubeClient, type KubeObject, type ResourceType } from "../runtime/client.ts";
import { kubeConfigFrom } from "../runtime/config.ts";
import { attachTerminal, ConsoleRefused, openConsole } from "./console.ts";

const HELP = `stratus: Apache CloudStack rebuilt as a Kubernetes operator.

Usage:
  stratus up                       start the local cloud: control plane, CRDs, operator, API component and a
                                   host agent on local libvirt (real QEMU as root, else the test driver),
                                   seeded with a zone, offerings, the tiny template and a default network;
                                   a supervisor starts again any of its processes that exits (with backoff)
  stratus down [--purge]           stop it all and remove its domains, networks and pool from libvirt;
                                   the API objects and disks are kept unless --purge
  stratus test [VITEST ARGS]       install the Debian packages the tests need (as root on Debian), build or
                                   reuse the control plane, then run every test (vitest run)
  stratus console VM [-n NAMESPACE] [--kubeconfig PATH]
                                   the VM's serial console, through the API server (Ctrl-] leaves)
  stratus cluster build [--rebuild]
                                   build (or reuse) etcd, kube-apiserver, kube-controller-manager, kubectl
  stratus cluster start            start the local control plane and print its kubeconfig path
  stratus cluster stop [--purge]   stop it (data kept unless --purge)
  stratus cluster status           show which components run, with their restarts
  stratus status                   the control plane; the cloud's processes (running or backing off, pid,
                                   uptime, restarts, last exit); hosts and VMs
  stratus cluster kubeconfig [--user NAME] [--group GROUP]...
                                   print the admin kubeconfig path, or issue one for NAME/GROUPs

Environment:
  STRATUS_HOME          state directory (default ~/.local/state/stratus)
  STRATUS_CACHE_DIR     binary cache (default ~/.cache/stratus)
  STRATUS_KUBE_VERSION, STRATUS_ETCD_VERSION
                        other control-plane versions (default v1.37.2 and v3.7.3)
  KUBEBUILDER_ASSETS    use envtest binaries from this directory instead of building
`;

function stateDir(): string {
  return (
    process.env.STRATUS_HOME ||
    join(process.env.XDG_STATE_HOME || join(homedir(), ".local", "state"), "stratus")
  );
}
const clusterDir = () => join(stateDir(), "cluster");
const cloudDir = () => join(stateDir(), "cloud");

const progress = (message: string) => process.stderr.write(`• ${message}\n`);

async function startCluster(): Promise<void> {
  const dir = clusterDir();
  const started = Date.now();
  const controlPlane = await LocalControlPlane.start({ dir, detached: true, progress });
  progress(
    `control plane ready in ${((Date.now() - started) / 1000).toFixed(1)} s at ${controlPlane.server}`,
  );
  process.stdout.write(
    `\nexport KUBECONFIG=${controlPlane.kubeconfigPath}\n` +
      `kubectl (v1.37.2): ${controlPlane.binaries.kubectl}\n` +
      `Try: ${controlPlane.binaries.kubectl} --kubeconfig ${controlPlane.kubeconfigPath} get namespaces\n`,
  );
}

/** `stratus up`: the whole local cloud; run again, it restarts the Stratus processes and changes nothing else. */
async function up(): Promise<void> {
  const started = Date.now();
  await ensureDebianPackages(progress);
  const existing = await LocalControlPlane.open(clusterDir()).catch(() => undefined);
  let controlPlane: LocalControlPlane;
  // Reused only while supervised: a control plane whose supervisor died is started again under one.
  if (existing && existing.running().length === 3 && existing.supervision().supervisorPid !== undefined) {
    progress(`the control plane is already running at ${existing.server}`);
    controlPlane = existing;
  } else {
    if (existing && existing.running().length > 0) await existing.stopComponents();
    controlPlane = await LocalControlPlane.start({ dir: clusterDir(), detached: true, progress });
  }
  progress("installing the Stratus CRDs (stratus.io/v1alpha1)");
  await installCustomResourceDefinitions(controlPlane.kubeConfig);
  const { access } = await LocalCloud.up({
    dir: cloudDir(),
    kubeConfig: controlPlane.kubeConfig,
    kubeconfigPath: controlPlane.kubeconfigPath,
    progress,
  });
  progress(`the cloud is up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const kubectl = controlPlane.binaries.kubectl;
  const simulated = access.libvirtUri.startsWith("test:");
  const cs = cloudStackClient();
  process.stdout.write(
    `\nStratus is up: one host on ${access.libvirtUri}${simulated ? " (simulated: no guest boots)" : " (real QEMU)"}.\n\n` +
      `  export KUBECONFIG=${controlPlane.kubeconfigPath}\n` +
      `  export CLOUDSTACK_ENDPOINT=${access.apiEndpoint} CLOUDSTACK_KEY=${access.apiKey} CLOUDSTACK_SECRET=${access.secretKey}\n\n` +
      `kubectl is ${kubectl}; \`cs\` (apt-get install python3-cs) reads the CLOUDSTACK_* variables.\n` +
      "Try:\n" +
      `  ${kubectl} apply -f ${access.firstVmManifest}\n` +
      `  ${kubectl} wait vm/first-vm --for=jsonpath='{.status.state}'=Running --timeout=300s && ${kubectl} get vm first-vm -o wide\n` +
      `  ${cs ?? "cs"} listVirtualMachines\n` +
      `\n${simulated ? "" : "`stratus console first-vm` attaches to its serial console (Ctrl-] leaves); "}` +
      "`stratus status` shows the hosts and VMs; `stratus down` stops everything.\n",
  );
}

/** The `cs` client's command: Debian's package names it `cloudstack` (its `cs` is another program). */
function cloudStackClient(): string | undefined {
  const path = (process.env.PATH ?? "").split(":");
  return ["cs", "cloudstack"].find((command) => path.some((dir) => dir && existsSync(join(dir, command))));
}

async function down(purge: boolean): Promise<void> {
  const cloud = await LocalCloud.open(cloudDir(), progress);
  if (cloud) {
    await cloud.down({ purge });
    if (purge) await rm(cloudDir(), { recursive: true, force: true });
  }
  if (await LocalControlPlane.open(clusterDir()).catch(() => undefined)) await stopCluster(purge);
  else progress("no control plane was ever started");
}

async function stopCluster(purge: boolean): Promise<void> {
  const controlPlane = await LocalControlPlane.open(clusterDir(), { progress });
  if (purge) await controlPlane.destroy();
  else await controlPlane.stopComponents();
  progress(
    purge ? `stopped and deleted ${clusterDir()}` : "stopped (data kept; `stratus cluster start` resumes it)",
  );
}

/**
 * Installs the Debian packages the tests need (the local cloud's and the test-only ones, as root on
 * Debian) and builds the binaries first, with progress, so no test is skipped for a missing package
 * and the test run itself never waits silently on Go.
 */
async function runTests(vitestArgs: string[]): Promise<void> {
  await ensureDebianPackages(progress, [PACKAGE_LISTS.cloud, PACKAGE_LISTS.tests], "the tests need");
  await ensureBinaries({ progress });
  await ensureTestTool("minio", { progress });
  // Before any test: libvirtd may need a restart to take disk leases, which no test should see.
  if (canRunQemu()) await ensureLibvirtDaemons(progress);
  const projectRoot = fileURLToPath(new URL("..", import.meta.url));
  const vitest = spawn(
    process.execPath,
    [join(projectRoot, "node_modules", "vitest", "vitest.mjs"), "run", ...vitestArgs],
    {
      cwd: projectRoot,
      stdio: "inherit",
    },
  );
  const code = await new Promise<number>((resolve) => vitest.on("close", (status) => resolve(status ?? 1)));
  process.exitCode = code;
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === "test") return runTests(argv.slice(1));
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: "boolean", short: "h" },
      purge: { type: "boolean" },
      rebuild: { type: "boolean" },
      user: { type: "string" },
      group: { type: "string", multiple: true },
      namespace: { type: "string", short: "n" },
      kubeconfig: { type: "string" },
    },
  });
  const [command, subcommand] = positionals;
  if (values.help || !command) {
    process.stdout.write(HELP);
    return;
  }
  switch (`${command} ${subcommand ?? ""}`.trim()) {
    case "up":
      return up();
    case "cluster start":
      return startCluster();
    case "down":
      return down(values.purge ?? false);
    case "cluster stop":
      return stopCluster(values.purge ?? false);
    case "cluster build": {
      const binaries = await ensureBinaries({ progress, rebuild: values.rebuild ?? false });
      for (const [name, path] of Object.entries(binaries)) process.stdout.write(`${name}\t${path}\n`);
      return;
    }
    case "status": {
      const controlPlane = await LocalControlPlane.open(clusterDir());
      await printClusterStatus(controlPlane);
      const cloud = await LocalCloud.open(cloudDir());
      if (cloud) printCloudProcesses(cloud);
      if (controlPlane.running().includes("kube-apiserver")) await printCloudStatus(controlPlane.kubeConfig);
      return;
    }
    case "cluster status": {
      const controlPlane = await LocalControlPlane.open(clusterDir());
      await printClusterStatus(controlPlane);
      return;
    }
    case `console ${subcommand ?? ""}`.trim(): {
      if (!subcommand) throw new UsageError("which VM? `stratus console NAME [-n NAMESPACE]`");
      const kubeConfig = kubeConfigFrom(
        values.kubeconfig ??
          process.env.KUBECONFIG ??
          (await LocalControlPlane.open(clusterDir())).kubeconfigPath,
      );
      const namespace =
        values.namespace ??
        kubeConfig.getContextObject(kubeConfig.getCurrentContext())?.namespace ??
        "default";
      try {
        await attachTerminal(await openConsole(kubeConfig, namespace, subcommand));
      } catch (error) {
        if (error instanceof ConsoleRefused)
          throw new UsageError(
            `${error.message} (is the VM running, and may you get virtualmachines/console?)`,
          );
        throw error;
      }
      return;
    }
    case "cluster kubeconfig": {
      const controlPlane = await LocalControlPlane.open(clusterDir());
      if (!values.user) {
        process.stdout.write(`${controlPlane.kubeconfigPath}\n`);
        return;
      }
      const identity = await controlPlane.issueIdentity(values.user, values.group ?? []);
      process.stdout.write(`${identity.kubeconfigPath}\n`);
      return;
    }
    default:
      throw new UsageError(`unknown command "${positionals.join(" ")}"; see \`stratus --help\``);
  }
}

class UsageError extends Error {}

async function printClusterStatus(controlPlane: LocalControlPlane): Promise<void> {
  const lines = processLines(COMPONENTS, controlPlane.supervision(), (name) =>
    controlPlane.running().includes(name) ? controlPlane.pid(name) : undefined,
  );
  process.stdout.write(`${[clusterDir(), ...lines].join("\n")}\n`);
}

function printCloudProcesses(cloud: LocalCloud): void {
  const lines = processLines(CLOUD_PROCESSES, cloud.supervision(), (name) => cloud.pid(name));
  lines.push(`  CloudStack API: ${cloud.apiEndpoint}  libvirt: ${cloud.libvirtUri}`);
  process.stdout.write(`${lines.join("\n")}\n`);
}

/** One line per process as its supervisor records it, or as it runs when no supervisor started it. */
function processLines<Name extends string>(
  names: readonly Name[],
  supervision: Supervision<Name>,
  runningPid: (name: Name) => number | undefined,
): string[] {
  const now = Date.now();
  const { supervisorPid, components } = supervision;
  const orphans = names.some((name) => components[name]?.state === "running");
  const supervisor =
    supervisorPid !== undefined
      ? `  supervisor: running (pid ${supervisorPid})`
      : orphans
        ? "  supervisor: not running (a process that exits stays down; `stratus up` starts them all again)"
        : "  supervisor: stopped";
  return [
    ...(Object.keys(components).length > 0 ? [supervisor] : []),
    ...names.map((name) => {
      const status = components[name];
      const pid = runningPid(name); // without a record: started by an older `stratus` or a test
      return `  ${name}: ${status ? describeComponent(status, now) : pid ? `running (pid ${pid}, unsupervised)` : "stopped"}`;
    }),
  ];
}

/** Hosts and VMs at a glance, as the cloud's operators want them. */
async function printCloudStatus(kubeConfig: KubeConfig): Promise<void> {
  const client = new KubeClient(kubeConfig);
  try {
    // Right after `stratus up` a new CRD's storage may still be initialising (429): ask again.
    const listed = async <T extends KubeObject>(type: ResourceType): Promise<T[]> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return (await client.list<T>(type)).items;
        } catch (error) {
          if (!(error instanceof ApiError && error.status === 429) || attempt >= 10) throw error;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
    };
    const hosts = await listed<Host>(Resources.hosts);
    const vms = await listed<VirtualMachine>(Resources.virtualMachines);
    const condition = (host: Host) =>
      host.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
    process.stdout.write(`hosts (${hosts.length}):\n`);
    for (const host of hosts)
      process.stdout.write(
        `  ${host.metadata.name}  zone=${host.spec.zone}  ${condition(host) ? "Ready" : "NotReady"}  ${host.status?.resourceState ?? ""}  vms=${host.status?.allocated?.virtualMachines ?? 0}\n`,
      );
    process.stdout.write(`virtual machines (${vms.length}):\n`);
    for (const vm of vms)
      process.stdout.write(
        `  ${vm.metadata.namespace}/${vm.metadata.name}  ${displayState(vm)}  host=${vm.status?.host ?? "-"}  ip=${vm.status?.nics?.[0]?.ipAddress ?? "-"}\n`,
      );
  } catch (error) {
    process.stdout.write(`(the Stratus API is not installed: ${(error as Error).message})\n`);
  } finally {
    await client.close();
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (
    error instanceof ControlPlaneSetupError ||
    error instanceof UsageError ||
    (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
  ) {
    process.stderr.write(`stratus: ${(error as Error).message}\n`);
    process.exit(2);
  }
  process.stderr.write(`stratus: unexpected failure: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});

// Two real hypervisors on one machine, for tests: the machine's own libvirtd is the first; the
// second is a virtlogd + virtlockd + libvirtd of their own inside `unshare -m --propagation private`, with
// private /run, /run/libvirt, /var/lib/libvirt, /etc/libvirt (its own host_uuid),
// /var/cache/libvirt and /var/log/libvirt (the recipe in ../shared/docs/HYPERVISOR.md). Both share
// the kernel, the bridges and every other directory (a shared pool), so a guest live-migrates
// between them as between two hosts. The second daemon runs under a name of its own
// (`libvirtd-hv2`), so `pkill -x libvirtd` aimed at the machine's daemon never hits it.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, openSync } from "node:fs";
import { copyFile, mkdir, readdir, readFile, readlink, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { enableDiskLeases, ensureLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { stopWatchdog } from "../../host-agent/fence-state.ts";
import { type StratusProcess, startStratusProcess } from "./processes.ts";
import { waitFor } from "./support.ts";

const run = promisify(execFile);

/** The directories the second daemon gets private copies of, and where each copy lives under its dir. */
const PRIVATE_DIRECTORIES = [
  ["/run/libvirt", "run"],
  ["/var/lib/libvirt", "lib"],
  ["/etc/libvirt", "etc"],
  ["/var/cache/libvirt", "cache"],
  ["/var/log/libvirt", "log"],
] as const;

export interface SecondHypervisor {
  /** What a host agent (or a migration) opens: the daemon's socket as the machine sees it. */
  uri: string;
  /** The daemon's host UUID (different from the machine's daemon). */
  hostUuid: string;
  dir: string;
  /** The daemon's output, for a failing test's report. */
  logs(): Promise<string>;
  /** Its network namespace, when it has one of its own. */
  network?: OwnNetwork;
  /** Destroys the guests it still runs, then stops its process group; waits until nothing of it is left. */
  stop(): Promise<void>;
}

/** virsh against a libvirt URI. */
export async function virshOn(uri: string, ...args: string[]): Promise<string> {
  return (await run("virsh", ["-c", uri, ...args])).stdout;
}

/** A network namespace of the second daemon's own, linked to the machine's by a veth pair. */
export interface OwnNetwork {
  /** A PID in the namespace (for `nsenter -t PID -n`). */
  pid: number;
  /** The address of the machine's end of the link, and of the namespace's. */
  hostAddress: string;
  namespaceAddress: string;
}

/**
 * Starts the second daemon with its state under `dir` (created; reused when it exists). With
 * `ownNetwork` it also gets a network namespace of its own, so its libvirt networks may use the
 * subnets the machine's daemon uses (one kernel refuses two bridges with one subnet), reached
 * over a veth pair (QEMU's migration stream takes it).
 */
export async function startSecondHypervisor(
  dir: string,
  options: { ownNetwork?: boolean } = {},
): Promise<SecondHypervisor> {
  for (const [, local] of PRIVATE_DIRECTORIES)
    await mkdir(join(dir, local), { recursive: true, mode: 0o755 });
  const hostUuid = randomUUID();
  await copyLibvirtConfig(join(dir, "etc"), hostUuid);
  const bin = join(dir, "bin");
  await mkdir(bin, { recursive: true });
  for (const daemon of ["libvirtd", "virtlogd", "virtlockd"])
    if (!existsSync(join(bin, `${daemon}-hv2`)))
      await symlink(`/usr/sbin/${daemon}`, join(bin, `${daemon}-hv2`));
  const mounts = PRIVATE_DIRECTORIES.map(
    ([path, local]) => `mkdir -p ${path} && mount --bind ${join(dir, local)} ${path}`,
  );
  // A tmpfs on /run first: pid files and sockets of the machine's daemons stay out of sight.
  const script = [
    "set -e",
    ...(options.ownNetwork ? ["ip link set lo up"] : []),
    "mount -t tmpfs -o mode=755 tmpfs /run",
    ...mounts,
    `${join(bin, "virtlogd-hv2")} & logger=$!`,
    // Its own disk leases: a lock daemon apart takes fcntl locks on the same shared files.
    `${join(bin, "virtlockd-hv2")} & locker=$!`,
    // libvirtd would spawn a virtlogd of its own (a session apart, outside this group) when its socket is missing.
    "for s in virtlogd virtlockd; do for i in $(seq 100); do [ -S /run/libvirt/$s-sock ] && break; sleep 0.1; done; done",
    `${join(bin, "libvirtd-hv2")} & daemon=$!`,
    // bash stays their parent and reaps them (this machine's init reaps no orphans).
    `trap 'kill -TERM $daemon $logger 2>/dev/null; wait $daemon $logger; kill -TERM $locker 2>/dev/null; wait' TERM INT`,
    "wait",
  ].join("\n");
  const logPath = join(dir, "daemons.log");
  const out = openSync(logPath, "a");
  // detached: a process group of its own (unshare execs bash, the daemons' parent), stopped as one.
  const unshare = ["-m", ...(options.ownNetwork ? ["-n"] : []), "--propagation", "private"];
  const child = spawn("unshare", [...unshare, "bash", "-c", script], {
    detached: true,
    stdio: ["ignore", out, out],
  });
  child.unref();
  const socket = join(dir, "run", "libvirt-sock");
  const uri = `qemu+unix:///system?socket=${socket}`;
  const logs = () => readFile(logPath, "utf8").catch(() => "");
  await waitFor(
    "the second libvirtd to answer",
    async () => {
      if (child.exitCode !== null) throw new Error(`the second libvirtd exited:\n${await logs()}`);
      return existsSync(socket) && (await virshOn(uri, "version").then(() => true));
    },
    { timeoutMs: 60_000, intervalMs: 300 },
  );
  const namespace = await readlink(`/proc/${child.pid}/ns/mnt`);
  const network = options.ownNetwork ? await linkNetwork(child.pid as number) : undefined;
  return {
    uri,
    hostUuid,
    dir,
    logs,
    ...(network ? { network } : {}),
    async stop() {
      await stopSecondHypervisor(child, uri, namespace);
      if (network) await run("ip", ["link", "del", `hv2h${network.pid}`.slice(0, 15)]).catch(() => undefined);
    },
  };
}

/** A veth pair between the machine's network namespace and that of `pid`, with a /30 on it. */
async function linkNetwork(pid: number): Promise<OwnNetwork> {
  const hostSide = `hv2h${pid}`.slice(0, 15);
  const namespaceSide = `hv2n${pid}`.slice(0, 15);
  const subnet = `169.254.${1 + Math.floor(Math.random() * 253)}.${4 * Math.floor(Math.random() * 63)}`;
  const base = subnet.split(".").map(Number);
  const address = (offset: number) => [...base.slice(0, 3), (base[3] as number) + offset].join(".");
  const inNamespace = (...args: string[]) => run("nsenter", ["-t", String(pid), "-n", ...args]);
  await run("ip", ["link", "add", hostSide, "type", "veth", "peer", "name", namespaceSide]);
  await run("ip", ["link", "set", namespaceSide, "netns", String(pid)]);
  await run("ip", ["addr", "add", `${address(1)}/30`, "dev", hostSide]);
  await run("ip", ["link", "set", hostSide, "up"]);
  await inNamespace("ip", "addr", "add", `${address(2)}/30`, "dev", namespaceSide);
  await inNamespace("ip", "link", "set", namespaceSide, "up");
  return { pid, hostAddress: address(1), namespaceAddress: address(2) };
}

/** The daemon's configuration files (no domain or network definitions), with its own host UUID. */
async function copyLibvirtConfig(target: string, hostUuid: string): Promise<void> {
  for (const entry of await readdir("/etc/libvirt")) {
    const source = join("/etc/libvirt", entry);
    if ((await stat(source)).isFile()) await copyFile(source, join(target, entry));
  }
  const conf = join(target, "libvirtd.conf");
  const current = (await readFile(conf, "utf8").catch(() => "")).replace(/^host_uuid\s*=.*$/m, "");
  await writeFile(conf, `${current}\nhost_uuid = "${hostUuid}"\n`);
  await enableDiskLeases(join(target, "qemu.conf"));
}

async function stopSecondHypervisor(child: ChildProcess, uri: string, namespace: string): Promise<void> {
  // Guests outlive libvirtd (QEMU runs in a session of its own): destroy what it still runs first.
  const running = await virshOn(uri, "list", "--name").catch(() => "");
  for (const name of running.split("\n").filter(Boolean))
    await virshOn(uri, "destroy", name).catch(() => undefined);
  const networks = await virshOn(uri, "net-list", "--name").catch(() => "");
  for (const name of networks.split("\n").filter(Boolean))
    await virshOn(uri, "net-destroy", name).catch(() => undefined);
  const group = child.pid as number;
  const members = () => processGroupMembers(group);
  if ((await members()).length === 0) return;
  process.kill(-group, "SIGTERM");
  const ended = await waitFor("the second libvirtd to stop", async () => (await members()).length === 0, {
    timeoutMs: 20_000,
  }).catch(() => false);
  if (!ended) {
    process.kill(-group, "SIGKILL");
    await waitFor("the second libvirtd killed", async () => (await members()).length === 0);
  }
  // Anything else still in its mount namespace (a helper libvirt spawned in a session of its own).
  for (const pid of await processesInNamespace(namespace)) process.kill(pid, "SIGKILL");
}

/** The PIDs whose mount namespace is `namespace` (as /proc/PID/ns/mnt reads). */
export async function processesInNamespace(namespace: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc"))
    if (/^\d+$/.test(entry) && (await readlink(`/proc/${entry}/ns/mnt`).catch(() => "")) === namespace)
      pids.push(Number(entry));
  return pids;
}

/** The PIDs in a process group, from /proc (zombies of an exited group are not counted). */
export async function processGroupMembers(group: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // Fields after the command name (which may hold spaces): state, ppid, pgrp.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === group && state !== "Z") pids.push(Number(entry));
  }
  return pids;
}

export interface HypervisorHost {
  name: string;
  /** The libvirt URI its agent drives. */
  uri: string;
  /** Its agent's directories: pool, cache, console sockets, fence state. */
  dir: string;
  agent: StratusProcess;
  /** The serial console socket of a VM's guest on this host. */
  consoleSocket(vmUid: string): string;
  /** Kills its agent with `signal` and starts it again with the same arguments. */
  restartAgent(signal?: NodeJS.Signals): Promise<void>;
  /** Where QEMU's migration stream reaches this host (with separate networks: its end of the link). */
  migrationAddress: string;
  /** Runs a command in this host's network namespace (its bridges and guests). */
  inNetwork(command: string, ...args: string[]): Promise<string>;
}

export interface TwoHypervisorHosts {
  hosts: [HypervisorHost, HypervisorHost];
  second: SecondHypervisor;
  /** The directory both hosts see (a sharedMountPoint pool, marked `.stratus-shared`). */
  sharedDir: string;
  /** Kills the agents, then stops the second daemon (whose guests are destroyed). */
  stop(): Promise<void>;
}

/**
 * Two host agents with real QEMU: `names[0]` on the machine's libvirtd, `names[1]` on a second
 * daemon of its own; both reach `workDir/shared`, a directory an administrator's StoragePool of
 * type sharedMountPoint can name. The caller makes the zone and the pool.
 */
export async function startTwoHypervisorHosts(options: {
  kubeconfigPath: string;
  /** Each host's own kubeconfig (its agent's identity); `kubeconfigPath` otherwise. */
  kubeconfigFor?: (host: string) => Promise<string>;
  names: [string, string];
  zone: string;
  leaseNamespace: string;
  workDir: string;
  /** More arguments for each agent (e.g. its --migration-uri, which is its daemon's URI here). */
  agentArgs?: (host: { name: string; uri: string; migrationAddress: string }) => string[];
  /** The second daemon in a network namespace of its own (see startSecondHypervisor). */
  separateNetworks?: boolean;
}): Promise<TwoHypervisorHosts> {
  const { workDir } = options;
  await ensureLibvirtDaemons();
  const sharedDir = join(workDir, "shared");
  await mkdir(sharedDir, { recursive: true, mode: 0o755 });
  // What an administrator marks a shared file system with, since this one is no mount of its own.
  await writeFile(join(sharedDir, ".stratus-shared"), "");
  const second = await startSecondHypervisor(join(workDir, "hypervisor-2"), {
    ...(options.separateNetworks ? { ownNetwork: true } : {}),
  });
  const network = second.network;
  const migrationAddresses = network
    ? [network.hostAddress, network.namespaceAddress]
    : ["127.0.0.1", "127.0.0.1"];
  const uris = ["qemu:///system", second.uri];
  const hosts: HypervisorHost[] = [];
  try {
    for (const [index, name] of options.names.entries()) {
      const dir = join(workDir, name);
      const uri = uris[index] as string;
      const migrationAddress = migrationAddresses[index] as string;
      const inNetwork = async (command: string, ...args: string[]) =>
        (index === 1 && network
          ? await run("nsenter", ["-t", String(network.pid), "-n", command, ...args])
          : await run(command, args)
        ).stdout;
      const kubeconfigPath = (await options.kubeconfigFor?.(name)) ?? options.kubeconfigPath;
      const start = () =>
        startStratusProcess({
          script: "host-agent/main.ts",
          kubeconfigPath,
          identity: name,
          args: [
            `--host-name=${name}`,
            `--zone=${options.zone}`,
            `--libvirt-uri=${uri}`,
            `--lease-namespace=${options.leaseNamespace}`,
            `--pool-path=${join(dir, "pool")}`,
            `--cache-dir=${join(dir, "cache")}`,
            `--console-dir=${join(dir, "console")}`,
            `--fence-dir=${join(dir, "fence")}`,
            "--shutdown-grace=3",
            "--heartbeat-interval=1",
            ...(options.agentArgs?.({ name, uri, migrationAddress }) ?? []),
          ],
        });
      const host: HypervisorHost = {
        name,
        uri,
        dir,
        agent: await start(),
        consoleSocket: (uid) => join(dir, "console", `${uid}.sock`),
        migrationAddress,
        inNetwork,
        async restartAgent(signal = "SIGKILL") {
          await host.agent.stop(signal);
          host.agent = await start();
        },
      };
      hosts.push(host);
    }
  } catch (error) {
    for (const host of hosts) await host.agent.stop("SIGKILL");
    await second.stop();
    throw error;
  }
  return {
    hosts: hosts as [HypervisorHost, HypervisorHost],
    second,
    sharedDir,
    async stop() {
      for (const host of hosts) {
        await host.agent.stop("SIGKILL");
        await stopWatchdog(join(host.dir, "fence"));
      }
      // The machine's daemon outlives the test: what the first host's agent defined there goes
      // (a failed test may leave a guest running); the second daemon goes whole.
      const first = hosts[0];
      if (first)
        await run(process.execPath, [
          "host-agent/main.ts",
          "--teardown",
          `--host-name=${first.name}`,
          `--kubeconfig=${options.kubeconfigPath}`,
          `--libvirt-uri=${first.uri}`,
          "--shutdown-grace=0",
        ]).catch(() => undefined);
      await second.stop();
    },
  };
}

/**
 * Joins the source's and the target's bridge of a network into one segment (a veth pair, each end
 * in its host's network, as a VLAN joins real hosts) once the target made its own, and pings the
 * guest every 100 ms for `seconds` from an extra address on the target's bridge: how many answers
 * a live migration in between cost.
 */
export async function pingAcrossMove(options: {
  second: SecondHypervisor;
  source: { host: HypervisorHost; bridge: string };
  target: { host: HypervisorHost; bridge: string };
  address: string;
  /** At most 12 characters: the veth pair is named with it. */
  linkName: string;
  seconds?: number;
}): Promise<{ sent: number; received: number; output?: string }> {
  const { source, target, address } = options;
  // The bridge with its gateway address: libvirt started the target's network.
  await waitFor("the target's bridge up", async () =>
    (
      await target.host.inNetwork("ip", "-o", "-4", "addr", "show", "dev", target.bridge).catch(() => "")
    ).includes("inet "),
  );
  const ends = [`${options.linkName}a`, `${options.linkName}b`] as const;
  await run("ip", ["link", "add", ends[0], "type", "veth", "peer", "name", ends[1]]);
  for (const [end, side] of [
    [ends[0], source],
    [ends[1], target],
  ] as const) {
    if (side.host.uri === options.second.uri && options.second.network)
      await run("ip", ["link", "set", end, "netns", String(options.second.network.pid)]);
    await side.host.inNetwork("ip", "link", "set", end, "master", side.bridge, "up");
  }
  const probe = address.replace(/\.\d+$/, ".253");
  await target.host.inNetwork("ip", "addr", "add", `${probe}/24`, "dev", target.bridge);
  try {
    await waitFor("the guest answering across the link", () =>
      target.host.inNetwork("busybox", "ping", "-c", "1", "-W", "1", "-I", probe, address).then(
        () => true,
        () => false,
      ),
    );
    // busybox: this machine has no iputils ping.
    const output = await target.host
      .inNetwork(
        "busybox",
        "ping",
        "-q",
        "-i",
        "0.1",
        "-w",
        String(options.seconds ?? 30),
        "-I",
        probe,
        address,
      )
      .catch((error: { stdout?: string; stderr?: string }) => `${error.stdout ?? ""}${error.stderr ?? ""}`);
    const [, sent, received] = /(\d+) packets transmitted, (\d+) packets received/.exec(output) ?? [];
    return { sent: Number(sent ?? 0), received: Number(received ?? 0), ...(sent ? {} : { output }) };
  } finally {
    await source.host.inNetwork("ip", "link", "del", ends[0]).catch(() => undefined);
    await target.host.inNetwork("ip", "link", "del", ends[1]).catch(() => undefined);
  }
}

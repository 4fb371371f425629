#!/usr/bin/env node
// stratus-host-agent: one per hypervisor host (a DaemonSet in a cluster).
import type { KeyObject } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { KubeClient } from "../runtime/client.ts";
import { kubeConfigFrom } from "../runtime/config.ts";
import { readConsolePublicKey } from "../runtime/console-ticket.ts";
import { apiServerCheck, HealthServer } from "../runtime/health.ts";
import { createLogger } from "../runtime/logger.ts";
import { RuntimeMetrics } from "../runtime/metrics.ts";
import { HostAgent } from "./agent.ts";
import { requireXorriso } from "./config-drive.ts";
import { ConsoleServer } from "./console.ts";
import { ensureConsoleCertificate } from "./console-certificate.ts";
import { installHostGuard } from "./host-guard.ts";
import { LibvirtConnection, stopEventLoop } from "./libvirt/connection.ts";
import { type Accelerator, LibvirtHypervisor } from "./libvirt-hypervisor.ts";
import { clusterIdentity } from "./registration.ts";
import { tearDownHost } from "./teardown.ts";

const HELP = `stratus-host-agent: runs the VMs bound to this host on libvirt.

Options:
  --host-name=NAME           the Host object (default $NODE_NAME, else the machine's host name)
  --zone=ZONE                zone to register a new Host in (required the first time)
  --libvirt-uri=URI          default $LIBVIRT_URI, else qemu:///system; test:///default simulates a host
  --kubeconfig=PATH          default $KUBECONFIG, else the in-cluster service account
  --lease-namespace=NS       namespace of the heartbeat Lease (default stratus-system)
  --heartbeat-interval=S     seconds between Lease renewals (default 5)
  --lease-duration=S         the heartbeat Lease's duration (default 20); HA guests are fenced a
                             quarter of it before it expires without a renewal
  --fence-dir=DIR            the fence watchdog's state (default /run/stratus/fence/<host>)
  --pool-path=DIR            the host's storage pool directory (default /var/lib/stratus/pools/<host>)
  --cache-dir=DIR            template image cache (default /var/lib/stratus/cache/<host>)
  --console-dir=DIR          serial console sockets (default /run/stratus/console/<host>)
  --vlan-uplink=IFACE        interface carrying VLAN-tagged guest traffic (networks with a VLAN get IFACE.<vlan>)
  --console-address=HOST:PORT serve the guests' serial consoles over WebSocket and TLS (needs --console-key-file)
  --console-key-file=PATH    the API component's console key, public half (Ed25519 PEM): it signs the
                             ticket each console connection presents
  --accelerator=A            kvm, tcg, or auto (default): KVM when libvirt offers it with a guest CPU
                             today's kernels boot on, emulation (TCG) otherwise
  --migration-uri=URI        the libvirt URI other hosts' agents open to live-migrate guests here (e.g.
                             qemu+tls://h1.example/system); without it this host takes no migrations
  --migration-address=ADDR   where QEMU's migration stream connects (tcp://ADDR), default: libvirt's choice
  --migration-bandwidth=MiBs cap on each outgoing live migration, MiB/s (default 0: none)
  --shutdown-grace=S         seconds a guest gets to shut down on ACPI before it is destroyed (default 60)
  --health-address=HOST:PORT /healthz, /readyz, /metrics, /debug/domains|networks (default 127.0.0.1:8082)
  --teardown                 take the host out of service and exit: shut down (within --shutdown-grace)
                             and undefine every domain this host's agent of this cluster defined, remove
                             its networks and pool (other clusters' and hosts' are never touched); disk
                             files and API objects stay, so an agent started later brings the VMs back
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      help: { type: "boolean", short: "h" },
      "host-name": { type: "string" },
      zone: { type: "string" },
      "libvirt-uri": { type: "string" },
      kubeconfig: { type: "string" },
      "lease-namespace": { type: "string", default: "stratus-system" },
      "heartbeat-interval": { type: "string", default: "5" },
      "lease-duration": { type: "string", default: "20" },
      "fence-dir": { type: "string" },
      "pool-path": { type: "string" },
      "cache-dir": { type: "string" },
      "console-dir": { type: "string" },
      "shutdown-grace": { type: "string", default: "60" },
      accelerator: { type: "string", default: "auto" },
      "vlan-uplink": { type: "string" },
      "migration-uri": { type: "string" },
      "migration-address": { type: "string" },
      "migration-bandwidth": { type: "string", default: "0" },
      "console-address": { type: "string" },
      "console-key-file": { type: "string" },
      "health-address": { type: "string", default: "127.0.0.1:8082" },
      teardown: { type: "boolean" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const hostName = values["host-name"] ?? process.env.NODE_NAME ?? hostname();
  const uri = values["libvirt-uri"] ?? process.env.LIBVIRT_URI ?? "qemu:///system";
  const heartbeatSeconds = Number(values["heartbeat-interval"]);
  const [healthHost, healthPort] = (values["health-address"] as string).split(/:(?=\d+$)/);
  if (!(Number(values["shutdown-grace"]) >= 0)) await fail(`--shutdown-grace must be a number of seconds`);
  if (values.teardown)
    return tearDown(uri, hostName, values.kubeconfig, Number(values["shutdown-grace"]) * 1000);
  if (!values.zone) await fail("--zone is required: the zone this host registers in");
  const accelerator = values.accelerator as string;
  if (!["auto", "kvm", "tcg"].includes(accelerator))
    await fail(`--accelerator must be kvm, tcg or auto, not "${accelerator}"`);
  if (!(heartbeatSeconds > 0)) await fail(`--heartbeat-interval must be a positive number of seconds`);
  const leaseSeconds = Number(values["lease-duration"]);
  if (!Number.isInteger(leaseSeconds) || leaseSeconds < 2 || leaseSeconds < 2 * heartbeatSeconds)
    await fail(`--lease-duration must be whole seconds, at least 2 and twice --heartbeat-interval`);
  if (!healthHost || !Number.isInteger(Number(healthPort))) await fail(`--health-address must be HOST:PORT`);
  const migration = await migrationOptions(values);

  const logger = createLogger("stratus-host-agent").child({ host: hostName });
  const metrics = new RuntimeMetrics();
  const client = new KubeClient(kubeConfigFrom(values.kubeconfig), {
    metrics,
    userAgent: `stratus-host-agent/${hostName}`,
  });
  // Real guests only: a simulated host (libvirt's test driver) has no bridges for guests to use.
  if (!uri.startsWith("test:")) {
    await installHostGuard().catch((error: Error) =>
      fail(`cannot guard the host from its guests: ${error.message}`),
    );
    // Guests with keys, user data or a password boot from a config drive that xorriso builds.
    await requireXorriso().catch((error: Error) => fail(`cannot build config drives: ${error.message}`));
  }
  let libvirt: LibvirtConnection;
  try {
    libvirt = await LibvirtConnection.open(uri);
  } catch (error) {
    return fail(`cannot connect to libvirt at ${uri}: ${(error as Error).message}`);
  }
  let consoleServer: ConsoleServer | undefined;
  let consoleEndpoint: { endpoint: string; certificate: string } | undefined;
  if (values["console-address"]) {
    if (!values["console-key-file"]) await fail("--console-address needs --console-key-file");
    const [consoleHost, consolePort] = (values["console-address"] as string).split(/:(?=\d+$)/);
    if (!consoleHost || !Number.isInteger(Number(consolePort)))
      await fail("--console-address must be HOST:PORT");
    let ticketKey: KeyObject;
    try {
      ticketKey = readConsolePublicKey(await readFile(values["console-key-file"] as string, "utf8"));
    } catch (error) {
      return fail(`--console-key-file: ${(error as Error).message}`);
    }
    // Beside the consoles' sockets: the certificate lives as long as the host's run directory.
    const certificateDir = values["console-dir"] ?? `/run/stratus/console/${hostName}`;
    await mkdir(certificateDir, { recursive: true, mode: 0o711 });
    const tls = await ensureConsoleCertificate(certificateDir, hostName);
    consoleServer = new ConsoleServer({
      host: consoleHost as string,
      port: Number(consolePort),
      hostName,
      ticketKey,
      tls,
      socketOf: (uid) => agent.consoleSocketOf(uid),
      logger,
    });
    const port = await consoleServer.listen();
    // A wildcard bind is advertised by the pod or host address the platform gives.
    const advertised = consoleHost === "0.0.0.0" ? (process.env.POD_IP ?? hostname()) : consoleHost;
    consoleEndpoint = { endpoint: `${advertised}:${port}`, certificate: tls.cert };
  }
  const agent: HostAgent = new HostAgent({
    hostName,
    zone: values.zone as string,
    client,
    libvirt,
    logger,
    metrics,
    leaseNamespace: values["lease-namespace"] as string,
    heartbeatIntervalMs: heartbeatSeconds * 1000,
    leaseDurationSeconds: leaseSeconds,
    fenceDir: values["fence-dir"] ?? `/run/stratus/fence/${hostName}`,
    ...(values["pool-path"] ? { poolPath: values["pool-path"] } : {}),
    ...(values["cache-dir"] ? { cacheDir: values["cache-dir"] } : {}),
    ...(values["console-dir"] ? { consoleDir: values["console-dir"] } : {}),
    shutdownGraceMs: Number(values["shutdown-grace"]) * 1000,
    accelerator: accelerator as Accelerator,
    ...(values["vlan-uplink"] ? { vlanUplink: values["vlan-uplink"] } : {}),
    ...(consoleEndpoint ? { consoleEndpoint } : {}),
    migration,
  });
  const health = new HealthServer({
    metrics,
    host: healthHost as string,
    port: Number(healthPort),
    readiness: {
      "api-server": apiServerCheck(client),
      informers: () => (agent.isSynced() ? undefined : "not synced yet"),
    },
    debug: {
      "/debug/domains": () => agent.describeDomains(),
      "/debug/networks": () => agent.describeNetworks(),
    },
  });
  const port = await health.listen();
  logger.info({ uri, health: `${healthHost}:${port}` }, "host agent starting");

  const shutdown = new AbortController();
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      shutdown.abort();
      setTimeout(() => process.exit(1), 25_000).unref();
    });
  }
  try {
    await agent.run(shutdown.signal);
  } catch (error) {
    logger.error({ err: error instanceof Error ? error.message : String(error) }, "host agent failed");
    await stopEventLoop();
    process.exit(1);
  }
  await health.close();
  await consoleServer?.close();
  await libvirt.close();
  await client.close();
  logger.info("host agent stopped");
  await stopEventLoop();
  process.exit(0);
}

async function tearDown(
  uri: string,
  hostName: string,
  kubeconfig: string | undefined,
  shutdownGraceMs: number,
) {
  const log = createLogger("stratus-host-agent");
  const client = new KubeClient(kubeConfigFrom(kubeconfig), { userAgent: `stratus-host-agent/${hostName}` });
  let cluster: string;
  try {
    cluster = await clusterIdentity(client);
  } catch (error) {
    return fail(
      `cannot read the cluster's identity (kube-system namespace) to know which domains are this agent's: ${(error as Error).message}`,
    );
  } finally {
    await client.close();
  }
  let libvirt: LibvirtConnection;
  try {
    libvirt = await LibvirtConnection.open(uri);
  } catch (error) {
    return fail(`cannot connect to libvirt at ${uri}: ${(error as Error).message}`);
  }
  const owner = { cluster, host: hostName };
  const hypervisor = new LibvirtHypervisor(libvirt, { owner, poolPath: "" });
  const removed = await tearDownHost(hypervisor, owner, { shutdownGraceMs, log });
  log.info(removed, "host taken out of service");
  process.stdout.write(
    `removed ${removed.domains.length} domain(s) and ${removed.networks.length} network(s) of host ${hostName} from ${uri}` +
      (removed.foreign ? `; left ${removed.foreign} domain(s) of other agents alone\n` : "\n"),
  );
  await libvirt.close();
  await stopEventLoop();
}

/** The live-migration flags, checked: they end up in Host status, where other agents read them. */
async function migrationOptions(values: Record<string, string | boolean | undefined>) {
  const uri = values["migration-uri"] as string | undefined;
  const address = values["migration-address"] as string | undefined;
  const bandwidthMiBps = Number(values["migration-bandwidth"]);
  if (uri !== undefined && (uri.length > 512 || !/^(qemu|qemu\+(tcp|tls|ssh|unix)):\/\/[^\s]*$/.test(uri)))
    await fail(
      `--migration-uri must be a qemu libvirt URI (qemu+tls://HOST/system, ...) of at most 512 characters`,
    );
  if (address !== undefined && !/^[A-Za-z0-9.:[\]-]{1,253}$/.test(address))
    await fail(`--migration-address must be a host name or address`);
  if (!Number.isInteger(bandwidthMiBps) || bandwidthMiBps < 0 || bandwidthMiBps > 100_000)
    await fail(`--migration-bandwidth must be whole MiB/s from 0 (no cap) to 100000`);
  return { ...(uri ? { uri } : {}), ...(address ? { address } : {}), bandwidthMiBps };
}

async function fail(message: string): Promise<never> {
  process.stderr.write(`stratus-host-agent: ${message}\n`);
  await stopEventLoop();
  process.exit(2);
}

await main();

#!/usr/bin/env node
// A fleet of simulated hosts in one process: the benchmark's alternative to one host-agent process
// per host. Each host runs the real agent code (HostAgent) with its own identity, its own API
// client (its own watches and connections), its own heartbeat and its own libvirt test driver: a
// test:///<file> URI gives each connection a private driver instance (test:///default is one
// instance shared by every connection of a process).
// Serves /healthz, /readyz (every host's caches synced), /metrics (the hosts' series summed, with
// the process's own) and /metrics/<host> (one host's series: its informers' watch events).
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { AggregatorRegistry } from "prom-client";
import { HostAgent } from "../host-agent/agent.ts";
import { LibvirtConnection, stopEventLoop } from "../host-agent/libvirt/connection.ts";
import { KubeClient } from "../runtime/client.ts";
import { kubeConfigFrom } from "../runtime/config.ts";
import { createLogger } from "../runtime/logger.ts";
import { RuntimeMetrics } from "../runtime/metrics.ts";
import { simulatedHostName } from "./lib/hosts.ts";

const HELP = `bench/fleet.ts: many simulated hosts in one process, each a real host agent.

Options:
  --hosts=N                  how many hosts (default 10, at most 250: libvirt calls are serialised per
                             connection, and the FFI queues at most 256 calls at once in a process)
  --first=K                  number of the first host: hosts are sim-K … sim-(K+N-1), zero-padded (default 0)
  --zone=ZONE                zone the hosts register in (required)
  --kubeconfig=PATH          the control plane (default $KUBECONFIG)
  --work-dir=DIR             each host's driver file, pool, cache and console directories (required)
  --cpus=N --memory-gib=N    each host's size, in its test driver's node description (default 64, 256)
  --heartbeat-interval=S     seconds between each host's Lease renewals (default 5)
  --lease-duration=S         each Lease's duration (default 20)
  --start-concurrency=N      hosts starting (registering, listing) at once (default 20)
  --health-address=HOST:PORT /healthz, /readyz, /metrics, /metrics/<host> (default 127.0.0.1:0)
`;

/** koffi queues at most 256 asynchronous calls per process; each host has at most one in flight. */
const MAX_HOSTS = 250;

/** A libvirt test driver's node: a host of this size with nothing defined on it. */
function testDriverNode(cpus: number, memoryKib: number): string {
  return `<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>${cpus}</cores><threads>1</threads><active>${cpus}</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>${memoryKib}</memory>
</node>
`;
}

interface FleetHost {
  name: string;
  agent: HostAgent;
  metrics: RuntimeMetrics;
  client: KubeClient;
  libvirt: LibvirtConnection;
  run?: Promise<void>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      help: { type: "boolean", short: "h" },
      hosts: { type: "string", default: "10" },
      first: { type: "string", default: "0" },
      zone: { type: "string" },
      kubeconfig: { type: "string" },
      "work-dir": { type: "string" },
      cpus: { type: "string", default: "64" },
      "memory-gib": { type: "string", default: "256" },
      "heartbeat-interval": { type: "string", default: "5" },
      "lease-duration": { type: "string", default: "20" },
      "start-concurrency": { type: "string", default: "20" },
      "health-address": { type: "string", default: "127.0.0.1:0" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const count = Number(values.hosts);
  const first = Number(values.first);
  const concurrency = Number(values["start-concurrency"]);
  if (!values.zone || !values["work-dir"]) return fail("--zone and --work-dir are required");
  if (![count, first, concurrency].every((n) => Number.isInteger(n) && n >= 0) || concurrency < 1)
    return fail("--hosts, --first and --start-concurrency must be whole numbers");
  if (count > MAX_HOSTS) return fail(`--hosts: at most ${MAX_HOSTS} hosts per fleet process`);
  const [healthHost, healthPort] = (values["health-address"] as string).split(/:(?=\d+$)/);
  if (!healthHost || !Number.isInteger(Number(healthPort))) return fail("--health-address must be HOST:PORT");

  const log = createLogger("stratus-bench-fleet");
  const kubeConfig = kubeConfigFrom(values.kubeconfig);
  const processMetrics = new RuntimeMetrics();
  const hosts: FleetHost[] = [];
  const shutdown = new AbortController();

  const server = createServer((request, response) => {
    const url = request.url ?? "/";
    const reply = (code: number, body: string, type = "text/plain") =>
      response.writeHead(code, { "content-type": type }).end(body);
    if (url === "/healthz") return reply(200, "ok\n");
    if (url === "/readyz") {
      const synced = hosts.filter((h) => h.agent.isSynced()).length;
      return reply(synced === count ? 200 : 503, `${synced} of ${count} hosts synced\n`);
    }
    if (url === "/metrics" || url.startsWith("/metrics/")) {
      const name = url.slice("/metrics/".length);
      const registries = url === "/metrics" ? hosts.map((h) => h.metrics.registry) : [];
      const one = hosts.find((h) => h.name === name);
      if (url !== "/metrics" && !one) return reply(404, `no host ${name} in this fleet\n`);
      void (async () => {
        const text = one
          ? await one.metrics.registry.metrics()
          : (await processMetrics.registry.metrics()) +
            (await AggregatorRegistry.aggregate(
              await Promise.all(registries.map((r) => r.getMetricsAsJSON())),
            ).metrics());
        reply(200, text, processMetrics.registry.contentType);
      })().catch((error: unknown) => reply(500, `${String(error)}\n`));
      return;
    }
    reply(404, "not found\n");
  });
  await new Promise<void>((resolve) => server.listen(Number(healthPort), healthHost, resolve));
  log.info({ health: (server.address() as AddressInfo).port, hosts: count, first }, "fleet starting");

  for (const signal of ["SIGTERM", "SIGINT"] as const)
    process.once(signal, () => {
      shutdown.abort();
      setTimeout(() => process.exit(1), 25_000).unref();
    });

  const failed: unknown[] = [];
  const startHost = async (index: number): Promise<void> => {
    const name = simulatedHostName(index);
    const dir = join(values["work-dir"] as string, name);
    await mkdir(dir, { recursive: true });
    const nodeFile = join(dir, "node.xml");
    await writeFile(
      nodeFile,
      testDriverNode(Number(values.cpus), Number(values["memory-gib"]) * 1024 * 1024),
    );
    const metrics = new RuntimeMetrics({ defaultMetrics: false });
    const client = new KubeClient(kubeConfig, { metrics, userAgent: `stratus-host-agent/${name}` });
    const libvirt = await LibvirtConnection.open(`test://${nodeFile}`);
    const agent = new HostAgent({
      hostName: name,
      zone: values.zone as string,
      client,
      libvirt,
      logger: log.child({ host: name }),
      metrics,
      heartbeatIntervalMs: Number(values["heartbeat-interval"]) * 1000,
      leaseDurationSeconds: Number(values["lease-duration"]),
      poolPath: join(dir, "pool"),
      cacheDir: join(dir, "cache"),
      consoleDir: join(dir, "console"),
      shutdownGraceMs: 0,
    });
    const host: FleetHost = { name, agent, metrics, client, libvirt };
    hosts.push(host);
    host.run = agent.run(shutdown.signal).catch((error: unknown) => {
      failed.push(error);
      log.error({ host: name, err: String(error) }, "host agent failed");
      shutdown.abort();
    });
    // Start-up is the expensive part (register, list every informer): a few hosts at a time.
    while (!agent.isSynced() && !shutdown.signal.aborted) await new Promise((r) => setTimeout(r, 50));
  };
  let next = first;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < first + count && !shutdown.signal.aborted) await startHost(next++);
    }),
  );
  log.info({ hosts: hosts.length }, "fleet started");

  await new Promise<void>((resolve) => shutdown.signal.addEventListener("abort", () => resolve()));
  await Promise.all(hosts.map((h) => h.run));
  await Promise.all(hosts.map((h) => h.libvirt.close()));
  await Promise.all(hosts.map((h) => h.client.close()));
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await stopEventLoop();
  process.exit(failed.length ? 1 : 0);
}

async function fail(message: string): Promise<never> {
  process.stderr.write(`bench/fleet.ts: ${message}\n`);
  process.exit(2);
}

if (import.meta.main) await main();

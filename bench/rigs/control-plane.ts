// Rig 1, the control plane alone: many simulated hosts (host agents on libvirt's test driver, one
// process per host or fleets of hosts in one process), VMs created at a fixed rate, then a burst at
// the ceiling's concurrency. Measured: create->Running percentiles and the phase each VM spent
// longest in, throughput against the ceiling, API requests per VM by verb and resource
// (kube-apiserver's /metrics), operator and agent memory per VM, the work queues' wait, and the
// CPU seconds each process spent per VM (/proc).
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import { pollUntil } from "../../runtime/time.ts";
import { qcow2Header } from "../../test/fixtures/qcow2.ts";
import { BenchContext, NAMESPACE, type StratusProcess, sleep, withConcurrency } from "../lib/context.ts";
import { type CpuSample, type CpuUse, cpuUse, sampleCpu } from "../lib/cpu.ts";
import { type AgentMode, SimulatedHosts } from "../lib/hosts.ts";
import { addBuckets, bucketDifference, difference, type MetricsSnapshot } from "../lib/metrics.ts";
import { perSecond } from "../lib/plots.ts";
import { histogramQuantile, type Summary, summarize } from "../lib/stats.ts";
import { STEPS, type Step, VmWatch } from "../lib/vm-watch.ts";
import { benchVm } from "./ceiling.ts";

export interface ControlPlaneOptions {
  /** One host-agent process per host, or the hosts in fleet processes (bench/fleet.ts). */
  agents: AgentMode;
  /** Number of the first simulated host: each mode's hosts keep names of their own. */
  firstHost: number;
  hosts: number;
  vms: number;
  ratePerSecond: number;
  burst: number;
  concurrency: number;
}

export interface ControlPlaneResult {
  options: ControlPlaneOptions;
  /** create->Running, seconds, of the fixed-rate VMs. */
  createToRunning: Summary;
  /** Seconds from the create to each step, fixed-rate VMs. */
  phases: Record<Step, Summary>;
  /** VMs Running per second over the fixed-rate phase, when it was sustained (steady part). */
  sustainedPerSecond: number;
  /** Burst: VMs Running per second from the first create to the last Running. */
  burstRunningPerSecond: number;
  burstCreateToRunning: Summary;
  /** Requests per fixed-rate VM, by "VERB resource[/subresource]"; leases (heartbeats) apart. */
  requestsPerVm: Record<string, number>;
  writesPerVm: number;
  /** Writes that reached etcd (create/update/delete) per VM, leases apart: no-op applies are not among them. */
  etcdWritesPerVm: number;
  heartbeatWritesPerSecond: number;
  memory: {
    operatorRssPerVm: number;
    operatorHeapPerVm: number;
    agentsRssPerVm: number;
    operatorRss: number;
    apiServerRss: number;
    etcdRss: number;
  };
  /** p99 seconds a key waited in each work queue, fixed-rate phase. */
  queueWaitP99: Record<string, number>;
  /** Per operator controller, fixed-rate phase: reconciles per VM, p99 seconds of one, retries per VM. */
  controllers: Record<string, { reconcilesPerVm: number; reconcileP99: number; retriesPerVm: number }>;
  /** CPU per process role over the fixed-rate phase (per fixed-rate VM) and over the burst (per burst VM). */
  cpu: { fixedRate: Record<string, CpuUse>; burst: Record<string, CpuUse> };
  /** Processes that ran the simulated hosts. */
  agentProcesses: number;
  hostsRegistered: number;
  series: { created: number[]; running: number[] };
  samples: { createToRunning: number[] };
}

const WRITE_VERBS = new Set(["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"]);
const requestKey = (labels: Record<string, string>) =>
  `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ""}`;

/** Serves a 1 GiB qcow2 header: the template the simulated hosts "download". */
async function serveImage(): Promise<{ server: Server; url: string }> {
  const image = qcow2Header(2n ** 30n);
  const server = createServer((request, response) => {
    if (request.url === "/bench.qcow2") response.end(image);
    else response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/bench.qcow2` };
}

export async function seedCatalogue(
  context: BenchContext,
  templateUrl: string,
  zones: readonly string[],
): Promise<void> {
  for (const zone of zones) await context.apply(Resources.zones, { metadata: { name: zone }, spec: {} });
  await context.apply(Resources.serviceOfferings, {
    metadata: { name: "bench-tiny" },
    spec: { cpu: 1, memory: "64Mi" },
  });
  await context.apply(Resources.templates, {
    metadata: { name: "bench-image" },
    spec: { source: { url: templateUrl }, format: "qcow2" },
  });
}

/** The benchmark's template server (the simulated hosts download the image) while `work` runs. */
export async function withTemplateServer<T>(work: (templateUrl: string) => Promise<T>): Promise<T> {
  const image = await serveImage();
  try {
    return await work(image.url);
  } finally {
    await new Promise<void>((resolve) => image.server.close(() => resolve()));
  }
}

/** The template server and the catalogue of rig 1. */
export function withCatalogue<T>(
  context: BenchContext,
  zones: readonly string[],
  work: () => Promise<T>,
): Promise<T> {
  return withTemplateServer(async (url) => {
    await seedCatalogue(context, url, zones);
    return work();
  });
}

export const zoneOf = (mode: AgentMode) => `bench-${mode}`;

export async function measureControlPlane(
  context: BenchContext,
  operator: StratusProcess,
  options: ControlPlaneOptions,
): Promise<ControlPlaneResult> {
  const namespace = `bench-rig1-${options.agents}`;
  const zone = zoneOf(options.agents);
  await context.namespace(namespace);
  context.progress(`rig 1 (${options.agents}): starting ${options.hosts} simulated hosts`);
  const hosts = await SimulatedHosts.start(context, {
    mode: options.agents,
    zone,
    first: options.firstHost,
    hosts: options.hosts,
  });
  try {
    await sleep(3_000); // let start-up writes settle before the baseline
    const watch = new VmWatch(context.client, namespace);
    await watch.start();
    const roles = context.processRoles({ operator: [operator.pid], agents: hosts.pids });
    const before = await readings(context, operator, hosts, roles);

    // Fixed rate: the create of VM i is sent at i/R seconds, whatever the previous ones do.
    context.progress(
      `rig 1 (${options.agents}): ${options.vms} VMs at ${options.ratePerSecond}/s on ${options.hosts} hosts`,
    );
    const sentAt = new Map<string, number>();
    const start = Date.now();
    const creates: Promise<unknown>[] = [];
    for (let i = 0; i < options.vms; i++) {
      const due = start + (i * 1000) / options.ratePerSecond;
      if (due > Date.now()) await sleep(due - Date.now());
      const name = `vm-${i}`;
      sentAt.set(name, Date.now());
      creates.push(context.client.create(Resources.virtualMachines, benchVm(name, namespace, zone)));
    }
    await Promise.all(creates);
    await watch.until(
      () => watch.count("Running") >= options.vms,
      300_000 + options.vms * 100,
      `${options.vms} VMs Running`,
    );
    const after = await readings(context, operator, hosts, roles);

    // Burst: as fast as the ceiling's concurrency allows.
    context.progress(
      `rig 1 (${options.agents}): burst of ${options.burst} VMs at concurrency ${options.concurrency}`,
    );
    const burstNames = Array.from({ length: options.burst }, (_, i) => `burst-${i}`);
    const burstStart = Date.now();
    await withConcurrency(burstNames, options.concurrency, async (name) => {
      sentAt.set(name, Date.now());
      await context.client.create(Resources.virtualMachines, benchVm(name, namespace, zone));
    });
    await watch.until(
      () => watch.count("Running") >= options.vms + options.burst,
      300_000 + options.burst * 100,
      "the burst Running",
    );
    const burstDone = sampleCpu(roles);
    await sleep(5_000); // caches and heaps settle before memory is read
    const loaded = await readings(context, operator, hosts, roles);
    await watch.stop();

    const stampsOf = (prefix: string) =>
      [...watch.stamps].filter(([name]) => name.startsWith(prefix)) as [
        string,
        Partial<Record<Step, number>>,
      ][];
    const fixed = stampsOf("vm-");
    const burst = stampsOf("burst-");
    const seconds = (ms: number) => ms / 1000;
    const createToRunning = fixed.map(([name, s]) =>
      seconds((s.Running as number) - (sentAt.get(name) as number)),
    );
    // Each step as seen from the create: which of them comes late shows whose work dominates.
    const phases = Object.fromEntries(
      STEPS.map((step) => [
        step,
        summarize(
          fixed
            .map(([name, s]) =>
              s[step] === undefined ? undefined : seconds((s[step] as number) - (sentAt.get(name) as number)),
            )
            .filter((v): v is number => v !== undefined),
        ),
      ]),
    ) as Record<Step, Summary>;
    const runningTimes = fixed.map(([, s]) => s.Running as number);
    const running = perSecond(runningTimes, start);
    const created = perSecond(
      [...sentAt].filter(([n]) => n.startsWith("vm-")).map(([, t]) => t),
      start,
    );
    // Steady state: the middle of the run (ramp-up and the tail left out).
    const steady = running.slice(Math.floor(running.length * 0.2), Math.ceil(running.length * 0.8));
    const lastBurstRunning = Math.max(...burst.map(([, s]) => s.Running as number));

    const requests = difference(after.requests, before.requests);
    const requestsPerVm: Record<string, number> = {};
    let writes = 0;
    let heartbeatWrites = 0;
    for (const [key, count] of [...requests].sort((a, b) => b[1] - a[1])) {
      if (count <= 0) continue;
      const [verb, resource] = key.split(" ") as [string, string];
      if (resource.startsWith("leases")) {
        if (WRITE_VERBS.has(verb)) heartbeatWrites += count;
        continue;
      }
      requestsPerVm[key] = count / options.vms;
      if (WRITE_VERBS.has(verb)) writes += count;
    }
    const phaseSeconds = (after.at - before.at) / 1000;
    const vmsNow = options.vms + options.burst;
    const queueWaitP99: Record<string, number> = {};
    for (const controller of new Set([...after.operatorQueues.keys()]))
      queueWaitP99[controller] = histogramQuantile(
        0.99,
        bucketDifference(
          after.operatorQueues.get(controller) ?? new Map(),
          before.operatorQueues.get(controller) ?? new Map(),
        ),
      );
    queueWaitP99["host-agent-vm (all hosts)"] = histogramQuantile(
      0.99,
      bucketDifference(after.agentQueue, before.agentQueue),
    );
    const controllers: ControlPlaneResult["controllers"] = {};
    for (const controller of after.operatorReconciles.keys()) {
      const reconciles = bucketDifference(
        after.operatorReconciles.get(controller) ?? new Map(),
        before.operatorReconciles.get(controller) ?? new Map(),
      );
      controllers[controller] = {
        reconcilesPerVm: (reconciles.get(Number.POSITIVE_INFINITY) ?? 0) / options.vms,
        reconcileP99: histogramQuantile(0.99, reconciles),
        retriesPerVm:
          ((after.operatorRetries.get(controller) ?? 0) - (before.operatorRetries.get(controller) ?? 0)) /
          options.vms,
      };
    }
    const registered = (await context.client.list(Resources.hosts)).items.filter((h) =>
      hosts.names.includes(h.metadata.name as string),
    ).length;
    await removeVms(context, namespace, vmsNow);
    return {
      controllers,
      options,
      cpu: {
        fixedRate: cpuUse(before.cpu, after.cpu, options.vms),
        burst: cpuUse(after.cpu, burstDone, options.burst),
      },
      agentProcesses: hosts.processes.length,
      hostsRegistered: registered,
      createToRunning: summarize(createToRunning),
      phases,
      sustainedPerSecond: steady.length ? steady.reduce((a, b) => a + b, 0) / steady.length : Number.NaN,
      burstRunningPerSecond: options.burst / seconds(lastBurstRunning - burstStart),
      burstCreateToRunning: summarize(
        burst.map(([name, s]) => seconds((s.Running as number) - (sentAt.get(name) as number))),
      ),
      requestsPerVm,
      writesPerVm: writes / options.vms,
      etcdWritesPerVm:
        [...difference(after.etcdWrites, before.etcdWrites)]
          .filter(([resource]) => resource !== "leases")
          .reduce((total, [, count]) => total + count, 0) / options.vms,
      heartbeatWritesPerSecond: heartbeatWrites / phaseSeconds,
      memory: {
        operatorRssPerVm: (loaded.operatorRss - before.operatorRss) / vmsNow,
        operatorHeapPerVm: (loaded.operatorHeap - before.operatorHeap) / vmsNow,
        agentsRssPerVm: (loaded.agentsRss - before.agentsRss) / vmsNow,
        operatorRss: loaded.operatorRss,
        apiServerRss: BenchContext.rss(context.controlPlane.pid("kube-apiserver") as number),
        etcdRss: BenchContext.rss(context.controlPlane.pid("etcd") as number),
      },
      queueWaitP99,
      series: { created, running },
      samples: { createToRunning },
    };
  } finally {
    await hosts.stop();
  }
}

/**
 * The next mode starts from the same state: this one's VMs go (while their agents still run to
 * release them), so the operator does not spend the next mode on hosts that went away.
 */
async function removeVms(context: BenchContext, namespace: string, vms: number): Promise<void> {
  context.progress(`rig 1: removing the ${vms} VMs of ${namespace}`);
  await context.client.delete(NAMESPACE, namespace);
  await pollUntil(
    () => `the VMs of ${namespace} to be gone`,
    async () =>
      (await context.client.list<VirtualMachine>(Resources.virtualMachines, { namespace })).items.length ===
      0,
    { timeoutMs: 120_000 + vms * 200, intervalMs: 1000 },
  ).catch((error: unknown) => context.progress(`${String(error)}; going on`));
}

interface Readings {
  at: number;
  requests: Map<string, number>;
  etcdWrites: Map<string, number>;
  operatorRss: number;
  operatorHeap: number;
  agentsRss: number;
  operatorQueues: Map<string, Map<number, number>>;
  operatorReconciles: Map<string, Map<number, number>>;
  operatorRetries: Map<string, number>;
  agentQueue: Map<number, number>;
  cpu: CpuSample;
}

async function readings(
  context: BenchContext,
  operator: StratusProcess,
  hosts: SimulatedHosts,
  roles: Record<string, readonly number[]>,
): Promise<Readings> {
  const cpu = sampleCpu(roles);
  const apiServer = await context.apiServerMetrics();
  const operatorMetrics = await operator.metrics();
  const agentMetrics: MetricsSnapshot[] = await hosts.metrics();
  const queue = "stratus_workqueue_queue_duration_seconds";
  const controllers = [...operatorMetrics.sum(`${queue}_count`, (l) => l.controller).keys()];
  return {
    at: Date.now(),
    requests: apiServer.sum("apiserver_request_total", requestKey),
    etcdWrites: apiServer.sum("etcd_requests_total", (l) =>
      ["create", "update", "delete"].includes(l.operation as string) ? (l.resource as string) : undefined,
    ),
    operatorRss: BenchContext.rss(operator.pid),
    operatorHeap: operatorMetrics.sum("nodejs_heap_size_used_bytes").get("") ?? Number.NaN,
    agentsRss: hosts.pids.reduce((total, pid) => total + BenchContext.rss(pid), 0),
    operatorQueues: new Map(
      controllers.map((c) => [c, operatorMetrics.histogram(queue, (l) => l.controller === c)]),
    ),
    operatorReconciles: new Map(
      controllers.map((c) => [
        c,
        operatorMetrics.histogram("stratus_reconcile_duration_seconds", (l) => l.controller === c),
      ]),
    ),
    operatorRetries: operatorMetrics.sum("stratus_workqueue_retries_total", (l) => l.controller),
    cpu,
    agentQueue: addBuckets(
      agentMetrics.map((m) => m.histogram(queue, (l) => l.controller === "host-agent-vm")),
    ),
  };
}

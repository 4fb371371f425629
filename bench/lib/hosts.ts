// Simulated hosts for the benchmark's rigs, in one of two shapes: one host-agent process per host
// (as a host runs in production), or fleets, many hosts per process (bench/fleet.ts, the same agent
// code with each host's own identity, client, watches, heartbeat and libvirt test driver), which
// leaves the machine's CPU to the control plane and scales to a thousand hosts.
import { join } from "node:path";
import { type Host, Resources } from "../../crds/index.ts";
import { pollUntil } from "../../runtime/time.ts";
import type { BenchContext, StratusProcess } from "./context.ts";
import { type MetricsSnapshot, scrape } from "./metrics.ts";

export const AGENT_MODES = ["processes", "fleet"] as const;
export type AgentMode = (typeof AGENT_MODES)[number];

/** Heap limit of one fleet process (the machine is shared: a fleet that needs more fails, and says so). */
const FLEET_HEAP_MB = 2048;

export const simulatedHostName = (index: number) => `sim-${String(index).padStart(4, "0")}`;

export interface SimulatedHostsOptions {
  mode: AgentMode;
  zone: string;
  /** Number of the first host (sim-<first>): hosts of another group keep other names. */
  first: number;
  hosts: number;
  /** Fleet mode: hosts per fleet process. */
  hostsPerFleet?: number;
  heartbeatSeconds?: number;
  /** Fleet mode: hosts of one fleet starting at once (each lists every resource it watches). */
  startConcurrency?: number;
  leaseDurationSeconds?: number;
}

/** A group of simulated hosts, whatever processes run them. */
export class SimulatedHosts {
  readonly mode: AgentMode;
  readonly names: string[] = [];
  readonly processes: StratusProcess[] = [];
  /** Fleet mode: host name -> the fleet process that runs it. */
  private readonly fleetOf = new Map<string, StratusProcess>();

  private constructor(mode: AgentMode) {
    this.mode = mode;
  }

  /** Starts the hosts and waits until each has registered its Host, overcommitted, and is Ready. */
  static async start(context: BenchContext, options: SimulatedHostsOptions): Promise<SimulatedHosts> {
    const group = new SimulatedHosts(options.mode);
    const heartbeat = [
      `--heartbeat-interval=${options.heartbeatSeconds ?? 5}`,
      ...(options.leaseDurationSeconds ? [`--lease-duration=${options.leaseDurationSeconds}`] : []),
    ];
    for (let i = options.first; i < options.first + options.hosts; i++)
      group.names.push(simulatedHostName(i));
    if (options.mode === "processes") {
      for (const host of group.names)
        group.processes.push(
          await context.start(`agent-${host}`, "host-agent/main.ts", [
            `--host-name=${host}`,
            `--zone=${options.zone}`,
            "--libvirt-uri=test:///default",
            `--pool-path=${join(context.workDir, "hosts", host, "pool")}`,
            `--cache-dir=${join(context.workDir, "hosts", host, "cache")}`,
            `--console-dir=${join(context.workDir, "hosts", host, "console")}`,
            `--fence-dir=${join(context.workDir, "hosts", host, "fence")}`,
            ...heartbeat,
          ]),
        );
    } else {
      const perFleet = options.hostsPerFleet ?? 200;
      for (let first = 0; first < options.hosts; first += perFleet) {
        const count = Math.min(perFleet, options.hosts - first);
        const from = options.first + first;
        const fleet = await context.start(
          `fleet-${simulatedHostName(from)}`,
          "bench/fleet.ts",
          [
            `--hosts=${count}`,
            `--first=${from}`,
            `--zone=${options.zone}`,
            `--work-dir=${join(context.workDir, "fleet")}`,
            ...(options.startConcurrency ? [`--start-concurrency=${options.startConcurrency}`] : []),
            ...heartbeat,
          ],
          // A bound, so a fleet that outgrows the machine fails alone instead of starving it.
          { NODE_OPTIONS: `--max-old-space-size=${FLEET_HEAP_MB}` },
        );
        group.processes.push(fleet);
        for (let i = from; i < from + count; i++) group.fleetOf.set(simulatedHostName(i), fleet);
      }
    }
    await Promise.all(group.processes.map((p) => p.ready));
    await waitForHosts(context, group.names);
    return group;
  }

  /** Processes of this group that have exited. */
  exited(): string[] {
    return this.processes.filter((p) => p.exited()).map((p) => p.name);
  }

  get pids(): number[] {
    return this.processes.map((p) => p.pid);
  }

  /** Every process's /metrics (a fleet's sums its hosts'). */
  metrics(): Promise<MetricsSnapshot[]> {
    return Promise.all(this.processes.map((p) => p.metrics()));
  }

  /** One host's own series (its informers' watch events among them). */
  hostMetrics(name: string): Promise<MetricsSnapshot> {
    if (this.mode === "processes") {
      const agent = this.processes.find((p) => p.name === `agent-${name}`);
      if (!agent) throw new Error(`no simulated host ${name}`);
      return agent.metrics();
    }
    const fleet = this.fleetOf.get(name);
    if (!fleet) throw new Error(`no simulated host ${name}`);
    return scrape(`http://127.0.0.1:${fleet.healthPort}/metrics/${name}`);
  }

  async stop(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.stop()));
  }
}

/**
 * Waits until every host has registered its Host and is Ready, giving each room for every VM of
 * the run on the way (a test-driver host is small; overcommit is the admin's lever). An agent
 * serves /healthz before it has registered its Host, so each is patched once it appears.
 */
async function waitForHosts(context: BenchContext, names: readonly string[]): Promise<void> {
  const wanted = new Set(names);
  const patched = new Set<string>();
  let waitingFor = "the hosts";
  let lastProgress = 0;
  await pollUntil(
    () => waitingFor,
    async () => {
      const hosts = (await context.client.list<Host>(Resources.hosts)).items.filter((h) =>
        wanted.has(h.metadata.name as string),
      );
      for (const host of hosts) {
        const name = host.metadata.name as string;
        if (patched.has(name)) continue;
        await context.client.mergePatch(Resources.hosts, name, undefined, {
          spec: { cpuOvercommitRatio: 16, memoryOvercommitRatio: 16 },
        });
        patched.add(name);
      }
      const ready = hosts.filter((h) =>
        h.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
      ).length;
      waitingFor = `hosts: ${hosts.length} registered, ${patched.size} patched, ${ready} Ready of ${wanted.size}`;
      if (Date.now() - lastProgress > 15_000 && wanted.size > 50) {
        lastProgress = Date.now();
        context.progress(waitingFor);
      }
      return patched.size === wanted.size && ready === wanted.size;
    },
    { timeoutMs: 300_000 + wanted.size * 500, intervalMs: 500 },
  );
}

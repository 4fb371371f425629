// HA fault trials: simulated hosts (one agent process each, reaching the API server through a relay
// that can be cut) run HA VMs on a shared pool while faults hit one host at a time, several trials
// in flight: an agent SIGKILLed, frozen with SIGSTOP past its Lease, cut off from the API server
// while its guests run, SIGKILLed with the operator killed mid-restart, or SIGKILLed and restarted
// within its Lease. Every 300 ms every host is asked what it runs; a guest on two hosts at once in
// any sample is a failure. Each trial ends when every VM of the host runs again, and the restart
// times are reported.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Host, Resources, type VirtualMachine } from "../../crds/index.ts";
import { stopWatchdog } from "../../host-agent/fence-state.ts";
import { pollUntil } from "../../runtime/time.ts";
import { ApiProxy } from "../lib/api-proxy.ts";
import { type BenchContext, type StratusProcess, sleep } from "../lib/context.ts";
import { DomainSampler, type TwiceRunning } from "../lib/domain-sampler.ts";
import { type Summary, summarize } from "../lib/stats.ts";

export const FAULTS = [
  "agent-sigkill",
  "agent-sigstop",
  "agent-cut-off",
  "operator-killed-mid-restart",
  "agent-restarted-within-lease",
] as const;
export type Fault = (typeof FAULTS)[number];

export interface HaTrialsOptions {
  hosts: number;
  vmsPerHost: number;
  trials: number;
  /** Trials in flight at once (each on a host of its own). */
  concurrency: number;
  leaseSeconds: number;
  graceSeconds: number;
  /** A VM not running again within this long fails its trial. */
  trialTimeoutSeconds: number;
  templateUrl: string;
}

export interface HaTrialsResult {
  options: Omit<HaTrialsOptions, "templateUrl">;
  trials: number;
  byFault: Record<Fault, number>;
  /** Seconds from the fault to the VM running again (on another host, or on its own restarted one). */
  restartSeconds: Summary;
  restartSecondsByFault: Record<Fault, Summary>;
  /** Seconds from a freeze or cut to the watchdog killing the agent. */
  fencedSeconds: Summary;
  operatorKills: number;
  /** Agents that died outside a trial (fenced while the API server did not answer) and were restarted. */
  unplannedRestarts: number;
  samplingRounds: number;
  /** Samples in which a VM ran on two hosts: must be empty. */
  twice: TwiceRunning[];
  failures: string[];
  wallSeconds: number;
}

const ZONE = "bench-ha";
const NAMESPACE = "bench-ha";
const OFFERING = "bench-ha-tiny";
const TEMPLATE = "bench-ha-image";
const POOL = "bench-ha-shared";

interface TrialHost {
  name: string;
  proxy: ApiProxy;
  kubeconfig: string;
  agent?: StratusProcess;
  starts: number;
  busy: boolean;
}

export async function measureHaTrials(
  context: BenchContext,
  options: HaTrialsOptions,
): Promise<HaTrialsResult> {
  const began = Date.now();
  const dir = join(context.workDir, "ha");
  await seed(context, dir, options.templateUrl);
  let operator = await startOperator(context, options.graceSeconds, 0);
  let operatorStarts = 1;
  const hosts: TrialHost[] = [];
  for (let i = 0; i < options.hosts; i++) {
    const name = `ha-${String(i).padStart(3, "0")}`;
    const kubeconfig = join(dir, `${name}.kubeconfig`);
    hosts.push({
      name,
      proxy: await ApiProxy.start(context.controlPlane.kubeconfigPath, kubeconfig),
      kubeconfig,
      starts: 0,
      busy: false,
    });
  }
  const startAgent = async (host: TrialHost) => {
    host.starts++;
    const agent = await context.start(
      `agent-${host.name}-${host.starts}`,
      "host-agent/main.ts",
      [
        `--kubeconfig=${host.kubeconfig}`,
        `--host-name=${host.name}`,
        `--zone=${ZONE}`,
        "--libvirt-uri=test:///default",
        `--pool-path=${join(dir, host.name, "pool")}`,
        `--cache-dir=${join(dir, host.name, "cache")}`,
        `--console-dir=${join(dir, host.name, "console")}`,
        `--fence-dir=${join(dir, host.name, "fence")}`,
        "--heartbeat-interval=1",
        `--lease-duration=${options.leaseSeconds}`,
        "--shutdown-grace=1",
      ],
      // A thousand agent starts: V8's compile cache saves a third of each one's CPU.
      { NODE_COMPILE_CACHE: join(dir, "compile-cache") },
    );
    await agent.ready;
    host.agent = agent;
  };
  context.progress(`HA trials: starting ${options.hosts} hosts`);
  await Promise.all(hosts.map(startAgent));
  await waitForReady(
    context,
    hosts.map((h) => h.name),
  );
  const vmCount = options.hosts * options.vmsPerHost;
  context.progress(`HA trials: ${vmCount} HA VMs`);
  for (let i = 0; i < vmCount; i++)
    await context.apply(Resources.virtualMachines, {
      metadata: { name: `ha-vm-${i}`, namespace: NAMESPACE },
      spec: { zone: ZONE, serviceOffering: OFFERING, template: TEMPLATE },
    });
  await pollUntil(
    `${vmCount} VMs Running`,
    async () => {
      const vms = await listVms(context);
      return vms.filter((vm) => vm.status?.state === "Running").length === vmCount;
    },
    { timeoutMs: 300_000 },
  );

  const alive = (host: TrialHost) => host.agent !== undefined && !host.agent.exited();
  const sampler = new DomainSampler(() =>
    hosts.map((h) => ({
      name: h.name,
      alive: alive(h),
      ...(h.agent ? { healthPort: h.agent.healthPort } : {}),
    })),
  );
  sampler.start();

  const restarts: number[] = [];
  const restartsByFault = Object.fromEntries(FAULTS.map((f) => [f, [] as number[]])) as Record<
    Fault,
    number[]
  >;
  const byFault = Object.fromEntries(FAULTS.map((f) => [f, 0])) as Record<Fault, number>;
  const fenced: number[] = [];
  const failures: string[] = [];
  const fail = (message: string) => {
    failures.push(message);
    context.progress(`HA trials: FAILED ${message}`);
  };
  let operatorKills = 0;
  // As a DaemonSet would: an agent that died outside a trial (its watchdog fenced it while the
  // API server did not answer) is started again, and counted.
  let unplannedRestarts = 0;
  let supervising = true;
  const supervisor = (async () => {
    while (supervising) {
      for (const host of hosts)
        if (!host.busy && host.agent?.exited()) {
          host.busy = true;
          unplannedRestarts++;
          context.progress(`HA trials: ${host.name}'s agent died outside a trial; starting it again`);
          await startAgent(host)
            .catch((error: Error) => fail(`restarting ${host.name}: ${error.message}`))
            .finally(() => {
              host.busy = false;
            });
        }
      await sleep(1_000);
    }
  })();
  let operatorRestart: Promise<void> = Promise.resolve();
  let started = 0;

  const killOperatorLater = (delayMs: number) => {
    operatorRestart = operatorRestart.then(async () => {
      await sleep(delayMs);
      operator.child.kill("SIGKILL");
      operatorKills++;
      await waitForExit(operator);
      operator = await startOperator(context, options.graceSeconds, operatorStarts++);
    });
  };

  async function trial(host: TrialHost, fault: Fault, number: number): Promise<void> {
    const agent = host.agent as StratusProcess;
    // The guests the host runs, as it last said (not what the API says: a VM placed here a moment
    // ago still shows the state its last host wrote).
    const guests = [...(sampler.samples.get(host.name)?.running ?? [])];
    const t0 = Date.now();
    const leaseMs = options.leaseSeconds * 1000;
    let restartedAt = t0;
    if (fault === "agent-sigstop") agent.child.kill("SIGSTOP");
    else if (fault === "agent-cut-off") host.proxy.cutOff();
    else agent.child.kill("SIGKILL");
    if (fault === "operator-killed-mid-restart")
      // Around the release: from a second before the Lease expires to a second past the grace.
      killOperatorLater(leaseMs - 1_000 + Math.random() * (options.graceSeconds + 2) * 1000);
    if (fault === "agent-sigstop" || fault === "agent-cut-off") {
      // The watchdog kills a simulated host's agent, whose guests live in it, by the deadline.
      if (await waitForExit(agent, leaseMs * 2)) fenced.push((Date.now() - t0) / 1000);
      else {
        // Without HA guests there is nothing to fence, and the watchdog leaves the agent be.
        if (guests.length > 0)
          fail(`trial ${number} (${fault}, ${host.name}): the agent was not fenced within ${leaseMs * 2} ms`);
        agent.child.kill("SIGKILL");
      }
    } else await waitForExit(agent);
    if (fault === "agent-restarted-within-lease") {
      await sleep(Math.random() * leaseMs);
      restartedAt = Date.now();
      await startAgent(host);
    }
    const elsewhere = fault !== "agent-restarted-within-lease";
    const since = elsewhere ? t0 : restartedAt;
    const pending = new Set(guests);
    const deadline = t0 + options.trialTimeoutSeconds * 1000;
    while (pending.size > 0 && Date.now() < deadline) {
      for (const uid of pending) {
        const on = sampler.runningOn(uid, since).filter((h) => !elsewhere || h !== host.name);
        if (on.length === 0) continue;
        pending.delete(uid);
        const seconds = (Date.now() - t0) / 1000;
        restarts.push(seconds);
        restartsByFault[fault].push(seconds);
      }
      await sleep(200);
    }
    if (pending.size > 0) {
      const stuck = (await listVms(context)).filter((vm) => pending.has(vm.metadata.uid as string));
      const said = stuck.map(
        (vm) =>
          `${vm.metadata.name} on ${vm.status?.host} ${vm.status?.state} [${(vm.status?.conditions ?? [])
            .filter((c) => c.status !== "True")
            .map((c) => `${c.type}=${c.reason}`)
            .join(", ")}]`,
      );
      fail(`trial ${number} (${fault}, ${host.name}): not running again in time: ${said.join("; ")}`);
    }
    host.proxy.restore();
    if (elsewhere) await startAgent(host);
    await waitForReady(context, [host.name]);
    byFault[fault]++;
  }

  context.progress(`HA trials: ${options.trials} trials, ${options.concurrency} at once`);
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (started < options.trials) {
        const candidates = hosts.filter(
          (h) => !h.busy && alive(h) && (sampler.samples.get(h.name)?.running.size ?? 0) > 0,
        );
        const host = candidates[Math.floor(Math.random() * candidates.length)];
        if (!host) {
          await sleep(500);
          continue;
        }
        host.busy = true;
        const number = ++started;
        const fault = FAULTS[number % FAULTS.length] as Fault;
        try {
          await trial(host, fault, number);
        } catch (error) {
          fail(`trial ${number} (${fault}, ${host.name}): ${(error as Error).message}`);
        } finally {
          host.busy = false;
        }
        if (number % 50 === 0)
          context.progress(
            `HA trials: ${number}/${options.trials}, ${failures.length} failure(s), ${sampler.twice.length} twice`,
          );
      }
    }),
  );
  await operatorRestart;
  supervising = false;
  await supervisor;
  await sampler.stop();
  for (const host of hosts) await host.proxy.close();
  // The watchdogs would outlive the agents by a Lease, writing into the run's directory.
  await Promise.all(
    hosts.map(async (host) => {
      await host.agent?.stop();
      await stopWatchdog(join(dir, host.name, "fence"));
    }),
  );
  const { templateUrl: _, ...shown } = options;
  return {
    options: shown,
    trials: started,
    byFault,
    restartSeconds: summarize(restarts),
    restartSecondsByFault: Object.fromEntries(
      FAULTS.map((f) => [f, summarize(restartsByFault[f])]),
    ) as Record<Fault, Summary>,
    fencedSeconds: summarize(fenced),
    operatorKills,
    unplannedRestarts,
    samplingRounds: sampler.rounds,
    twice: sampler.twice,
    failures,
    wallSeconds: (Date.now() - began) / 1000,
  };
}

async function seed(context: BenchContext, dir: string, templateUrl: string): Promise<void> {
  const shared = join(dir, "shared");
  await mkdir(shared, { recursive: true });
  await writeFile(join(shared, ".stratus-shared"), "");
  await context.namespace(NAMESPACE);
  await context.apply(Resources.zones, {
    metadata: { name: ZONE },
    spec: { secondaryStorage: { path: join(dir, "secondary") } },
  });
  await context.apply(Resources.storagePools, {
    metadata: { name: POOL },
    spec: { zone: ZONE, type: "sharedMountPoint", path: shared },
  });
  await context.apply(Resources.serviceOfferings, {
    metadata: { name: OFFERING },
    spec: { cpu: 1, memory: "64Mi", highAvailability: true, storageType: "shared" },
  });
  await context.apply(Resources.templates, {
    metadata: { name: TEMPLATE },
    spec: { source: { url: templateUrl }, format: "qcow2" },
  });
}

async function startOperator(
  context: BenchContext,
  graceSeconds: number,
  n: number,
): Promise<StratusProcess> {
  const operator = await context.start(`operator-ha-${n}`, "operator/main.ts", [
    "--identity=bench-ha-operator",
    `--host-grace=${graceSeconds}`,
  ]);
  await operator.ready;
  return operator;
}

async function listVms(context: BenchContext): Promise<VirtualMachine[]> {
  return (await context.client.list<VirtualMachine>(Resources.virtualMachines, { namespace: NAMESPACE }))
    .items;
}

async function waitForReady(context: BenchContext, names: readonly string[]): Promise<void> {
  await pollUntil(
    `hosts ${names.join(", ")} Ready`,
    async () => {
      const found = await Promise.all(
        names.map((n) => context.client.get<Host>(Resources.hosts, n).catch(() => undefined)),
      );
      return found.every((h) =>
        h?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
      );
    },
    { timeoutMs: 120_000 },
  );
}

/** Resolves true once the process has exited, false after `timeoutMs`. */
async function waitForExit(process: StratusProcess, timeoutMs = 30_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!process.exited()) {
    if (Date.now() > end) return false;
    await sleep(100);
  }
  return true;
}

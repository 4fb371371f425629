#!/usr/bin/env node
// `npm run bench` (about 30 minutes) and `npm run bench:quick` (about 6 minutes): Stratus
// against the ceiling of its own API server, measured in the same run, and against KubeVirt's
// published figures. Rig 1 runs twice, with one host-agent process per simulated host and with
// the hosts in fleet processes (--agents=processes|fleet|both or a list in the order to run them,
// --fleet for fleet alone).
// `npm run bench:scale` (--scale) grows one cluster to 1,000 simulated hosts and 20,000 VMs instead
// (--scale-stages=100:2000,1000:20000 for other sizes). `npm run bench:ha` (--ha, about 85 minutes;
// --quick 100 trials) runs the HA fault trials instead (rigs/ha-trials.ts). Writes
// bench/results/<mode>/{results.json,latency.svg,throughput.svg,summary.txt} (--out=DIR elsewhere);
// --skip-qemu leaves out the real-QEMU rig.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { BenchContext } from "./lib/context.ts";
import { AGENT_MODES, type AgentMode } from "./lib/hosts.ts";
import { latencyDistribution, throughputOverTime } from "./lib/plots.ts";
import { report, reportScale } from "./report.ts";
import { reportHa } from "./report-ha.ts";
import { measureCeiling } from "./rigs/ceiling.ts";
import { measureCloudStackApi } from "./rigs/cloudstack-api.ts";
import {
  type ControlPlaneResult,
  measureControlPlane,
  withCatalogue,
  withTemplateServer,
  zoneOf,
} from "./rigs/control-plane.ts";
import { type HaTrialsOptions, measureHaTrials } from "./rigs/ha-trials.ts";
import { measureQemu } from "./rigs/qemu.ts";
import { measureScale, type ScaleOptions, type ScaleResult } from "./rigs/scale.ts";

const MODES = {
  // For the test that keeps the benchmark working (test/integration/bench.test.ts), not for figures.
  smoke: {
    ceiling: { objects: 40, concurrency: 4 },
    rig1: { hosts: 2, vms: 20, ratePerSecond: 10, burst: 10, concurrency: 4 },
    api: { sizes: [50], requests: 5, concurrency: 4, accounts: 5 },
    qemu: { vms: 1 },
  },
  quick: {
    ceiling: { objects: 300, concurrency: 8 },
    rig1: { hosts: 10, vms: 200, ratePerSecond: 10, burst: 200, concurrency: 8 },
    api: { sizes: [1000], requests: 20, concurrency: 8, accounts: 50 },
    qemu: { vms: 2 },
  },
  full: {
    ceiling: { objects: 2000, concurrency: 8 },
    rig1: { hosts: 50, vms: 2000, ratePerSecond: 10, burst: 1000, concurrency: 8 },
    api: { sizes: [1000, 10000], requests: 50, concurrency: 8, accounts: 200 },
    qemu: { vms: 6 },
  },
} as const;

/** The scale run; the smoke test runs a tiny one (--scale-stages). */
const SCALE: ScaleOptions = {
  stages: [
    { hosts: 100, vms: 2000 },
    { hosts: 1000, vms: 20000 },
  ],
  hostsPerFleet: 200,
  concurrency: 8,
  heartbeatSeconds: 20,
  leaseDurationSeconds: 60,
  listRequests: 20,
  stageBudgetSeconds: 1200,
  // Each starting agent lists every VM of its host by field selector (read from all of them):
  // twenty at once per fleet made those lists time out at 100 hosts and 2,000 VMs.
  startConcurrency: 4,
};

/** HA fault trials (--ha): `full` is the thousand trials; the smoke test runs a handful. */
const HA = {
  smoke: { hosts: 3, vmsPerHost: 1, trials: 5, concurrency: 1 },
  quick: { hosts: 10, vmsPerHost: 2, trials: 100, concurrency: 3 },
  full: { hosts: 20, vmsPerHost: 3, trials: 1000, concurrency: 5 },
} satisfies Record<string, Pick<HaTrialsOptions, "hosts" | "vmsPerHost" | "trials" | "concurrency">>;
// A short Lease keeps a thousand trials short; production's is 20 s with 10 s of grace.
const HA_TIMING = { leaseSeconds: 6, graceSeconds: 2, trialTimeoutSeconds: 120 };

/** "100:2000,1000:20000" -> stages of hosts and VMs. */
function parseStages(text: string): ScaleOptions["stages"] {
  return text.split(",").map((stage) => {
    const [hosts, vms] = stage.split(":").map(Number);
    if (!Number.isInteger(hosts) || !Number.isInteger(vms) || !(hosts as number) || !(vms as number))
      throw new Error(`--scale-stages: "${stage}" is not HOSTS:VMS`);
    return { hosts: hosts as number, vms: vms as number };
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean" },
      smoke: { type: "boolean" },
      "skip-qemu": { type: "boolean" },
      out: { type: "string" },
      workers: { type: "string" },
      agents: { type: "string", default: "both" },
      fleet: { type: "boolean" },
      scale: { type: "boolean" },
      ha: { type: "boolean" },
      "ha-trials": { type: "string" },
      "scale-stages": { type: "string" },
      "scale-budget": { type: "string" },
      "hosts-per-fleet": { type: "string" },
      "start-concurrency": { type: "string" },
    },
  });
  // In the order given: the second mode runs on a control plane the first has used.
  const agentModes = (
    values.fleet ? ["fleet"] : values.agents === "both" ? [...AGENT_MODES] : (values.agents ?? "").split(",")
  ) as AgentMode[];
  if (agentModes.length === 0 || agentModes.some((m) => !AGENT_MODES.includes(m)))
    throw new Error(
      `--agents must be processes, fleet, both or a list (fleet,processes), not ${values.agents}`,
    );
  const out = (mode: string) =>
    values.out ?? join(fileURLToPath(new URL(".", import.meta.url)), "results", mode);
  if (values.ha) {
    const mode = values.smoke ? "smoke" : values.quick ? "quick" : "full";
    const outDir = values.out ?? join(fileURLToPath(new URL(".", import.meta.url)), "results", "ha");
    return benchmarkRun(outDir, async (context) => {
      const ha = await withTemplateServer(async (templateUrl) =>
        measureHaTrials(context, {
          ...HA[mode],
          ...HA_TIMING,
          ...(values["ha-trials"] ? { trials: Number(values["ha-trials"]) } : {}),
          templateUrl,
        }),
      );
      const results = { mode: `ha-${mode}`, date: new Date().toISOString(), machine: machine(), ha };
      return { results, summary: reportHa(results), plots: {} };
    });
  }
  if (values.scale) {
    const scale: ScaleOptions = {
      ...SCALE,
      ...(values["scale-stages"] ? { stages: parseStages(values["scale-stages"]) } : {}),
      ...(values["scale-budget"] ? { stageBudgetSeconds: Number(values["scale-budget"]) } : {}),
      ...(values["hosts-per-fleet"] ? { hostsPerFleet: Number(values["hosts-per-fleet"]) } : {}),
      ...(values["start-concurrency"] ? { startConcurrency: Number(values["start-concurrency"]) } : {}),
    };
    const outDir = out("scale");
    const resultsOf = (scale: ScaleResult) => ({
      mode: "scale",
      date: new Date().toISOString(),
      machine: machine(),
      scale,
    });
    return benchmarkRun(outDir, async (context) => {
      const operator = await startOperator(context, values.workers);
      const result = await measureScale(context, operator, scale, async (sofar) => {
        await mkdir(outDir, { recursive: true });
        await writeFile(join(outDir, "results.json"), `${JSON.stringify(resultsOf(sofar), null, 2)}\n`);
      });
      await operator.stop();
      const results = resultsOf(result);
      return { results, summary: reportScale(results), plots: {} };
    });
  }
  const mode = values.smoke ? "smoke" : values.quick ? "quick" : "full";
  const plan = MODES[mode];
  return benchmarkRun(out(mode), async (context) => {
    context.progress(
      `ceiling: ${plan.ceiling.objects} raw VirtualMachine creates at concurrency ${plan.ceiling.concurrency}`,
    );
    const ceiling = await measureCeiling(context, plan.ceiling);
    const operator = await startOperator(context, values.workers);
    const qemu = values["skip-qemu"] ? { skipped: "--skip-qemu" } : await measureQemu(context, plan.qemu);
    const rig1: Partial<Record<AgentMode, ControlPlaneResult>> = {};
    await withCatalogue(context, ["bench", ...agentModes.map(zoneOf)], async () => {
      for (const [i, agents] of agentModes.entries())
        rig1[agents] = await measureControlPlane(context, operator, {
          ...plan.rig1,
          agents,
          firstHost: i * plan.rig1.hosts,
        });
    });
    await operator.stop();
    const api = await measureCloudStackApi(context, plan.api);

    const results = {
      mode,
      date: new Date().toISOString(),
      machine: machine(),
      ceiling: { ...ceiling, samples: undefined },
      controlPlane: Object.fromEntries(
        Object.entries(rig1).map(([agents, result]) => [agents, { ...result, samples: undefined }]),
      ),
      cloudStackApi: {
        ...api,
        listVirtualMachines: api.listVirtualMachines.map((l) => ({ ...l, samples: undefined })),
      },
      qemu: "skipped" in qemu ? qemu : { ...qemu, samples: undefined },
    };
    const plots = {
      "latency.svg": await latencyDistribution(`Latency distributions (${mode} run)`, {
        "raw VirtualMachine create (ceiling)": ceiling.samples,
        ...Object.fromEntries(
          Object.entries(rig1).map(([agents, result]) => [
            `create -> Running, ${plan.rig1.vms} VMs at ${plan.rig1.ratePerSecond}/s (${agents})`,
            result.samples.createToRunning,
          ]),
        ),
        ...Object.fromEntries(
          api.listVirtualMachines.map((l) => [`listVirtualMachines, ${l.vms} VMs`, l.samples]),
        ),
        ...("skipped" in qemu ? {} : { "real QEMU: create -> guest IP": qemu.samples }),
      }),
      "throughput.svg": await throughputOverTime(
        `VMs per second, ${plan.rig1.hosts} simulated hosts (${mode} run)`,
        Object.fromEntries(
          Object.entries(rig1).flatMap(([agents, result]) => [
            [`created (${agents})`, result.series.created],
            [`Running (${agents})`, result.series.running],
          ]),
        ),
      ),
    };
    return { results, summary: report(results), plots };
  });
}

const machine = () => ({ cpus: cpus().length, node: process.version });

/**
 * One run on a control plane of its own: `measure` returns the results, the summary and plots,
 * written to `outDir` (results.json, summary.txt, *.svg). Interrupted or failed, the run still stops
 * what it started (they run in process groups of their own: a Ctrl-C does not reach them).
 */
async function benchmarkRun(
  outDir: string,
  measure: (
    context: BenchContext,
  ) => Promise<{ results: object; summary: string; plots: Record<string, string> }>,
): Promise<void> {
  const started = Date.now();
  const progress = (message: string) =>
    process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}\n`);
  const workDir = await mkdtemp(join(tmpdir(), "stratus-bench-"));
  const context = await BenchContext.create(workDir, progress);
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      progress(`${signal}: stopping everything the run started`);
      void context
        .close()
        .finally(() => rm(workDir, { recursive: true, force: true }))
        .finally(() => process.exit(130));
    });
  try {
    const { results, summary, plots } = await measure(context);
    await mkdir(outDir, { recursive: true });
    await writeFile(join(outDir, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
    for (const [name, svg] of Object.entries(plots)) await writeFile(join(outDir, name), svg);
    await writeFile(join(outDir, "summary.txt"), summary);
    process.stdout.write(summary);
    progress(`results in ${outDir}`);
  } catch (error) {
    progress(`failed; the processes' logs stay in ${join(workDir, "logs")}`);
    throw error;
  } finally {
    await context.close();
  }
  await rm(workDir, { recursive: true, force: true });
}

async function startOperator(context: BenchContext, workers: string | undefined) {
  const operator = await context.start("operator", "operator/main.ts", [
    "--identity=bench-operator",
    ...(workers ? [`--workers=${workers}`] : []),
  ]);
  await operator.ready;
  return operator;
}

await main();

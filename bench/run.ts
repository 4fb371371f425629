#!/usr/bin/env node
// `npm run bench` (about 15 minutes) and `npm run bench:quick` (under 2 minutes): Stratus
// against the ceiling of its own API server, measured in the same run, and against KubeVirt's
// published figures. Writes bench/results/<mode>/{results.json,latency.svg,throughput.svg,summary.txt}
// (--out=DIR elsewhere); --skip-qemu leaves out the real-QEMU rig.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { BenchContext } from "./lib/context.ts";
import { latencyDistribution, throughputOverTime } from "./lib/plots.ts";
import { report } from "./report.ts";
import { measureCeiling } from "./rigs/ceiling.ts";
import { measureCloudStackApi } from "./rigs/cloudstack-api.ts";
import { measureControlPlane } from "./rigs/control-plane.ts";
import { measureQemu } from "./rigs/qemu.ts";

const MODES = {
  // For the test that keeps the benchmark working (test/integration/bench.test.ts), not for figures.
  smoke: {
    ceiling: { objects: 40, concurrency: 4 },
    rig1: { hosts: 2, vms: 20, ratePerSecond: 10, burst: 10, concurrency: 4 },
    api: { sizes: [50], requests: 5, concurrency: 4 },
    qemu: { vms: 1 },
  },
  quick: {
    ceiling: { objects: 300, concurrency: 8 },
    rig1: { hosts: 10, vms: 200, ratePerSecond: 10, burst: 200, concurrency: 8 },
    api: { sizes: [1000], requests: 20, concurrency: 8 },
    qemu: { vms: 2 },
  },
  full: {
    ceiling: { objects: 2000, concurrency: 8 },
    rig1: { hosts: 50, vms: 2000, ratePerSecond: 10, burst: 1000, concurrency: 8 },
    api: { sizes: [1000, 10000], requests: 50, concurrency: 8 },
    qemu: { vms: 6 },
  },
} as const;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean" },
      smoke: { type: "boolean" },
      "skip-qemu": { type: "boolean" },
      out: { type: "string" },
      workers: { type: "string" },
    },
  });
  const mode = values.smoke ? "smoke" : values.quick ? "quick" : "full";
  const plan = MODES[mode];
  const started = Date.now();
  const progress = (message: string) =>
    process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}\n`);
  const workDir = await mkdtemp(join(tmpdir(), "stratus-bench-"));
  const context = await BenchContext.create(workDir, progress);
  // Interrupted, the run still stops what it started (they run in process groups of their own).
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      progress(`${signal}: stopping everything the run started`);
      void context
        .close()
        .finally(() => rm(workDir, { recursive: true, force: true }))
        .finally(() => process.exit(130));
    });
  try {
    progress(
      `ceiling: ${plan.ceiling.objects} raw VirtualMachine creates at concurrency ${plan.ceiling.concurrency}`,
    );
    const ceiling = await measureCeiling(context, plan.ceiling);
    const operator = await context.start("operator", "operator/main.ts", [
      "--identity=bench-operator",
      ...(values.workers ? [`--workers=${values.workers}`] : []),
    ]);
    await operator.ready;
    const qemu = values["skip-qemu"] ? { skipped: "--skip-qemu" } : await measureQemu(context, plan.qemu);
    const controlPlane = await measureControlPlane(context, operator, plan.rig1);
    await operator.stop();
    const api = await measureCloudStackApi(context, plan.api);

    const results = {
      mode,
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, node: process.version },
      ceiling: { ...ceiling, samples: undefined },
      controlPlane: { ...controlPlane, samples: undefined },
      cloudStackApi: {
        ...api,
        listVirtualMachines: api.listVirtualMachines.map((l) => ({ ...l, samples: undefined })),
      },
      qemu: "skipped" in qemu ? qemu : { ...qemu, samples: undefined },
    };
    const outDir = values.out ?? join(fileURLToPath(new URL(".", import.meta.url)), "results", mode);
    await mkdir(outDir, { recursive: true });
    await writeFile(join(outDir, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
    await writeFile(
      join(outDir, "latency.svg"),
      await latencyDistribution(`Latency distributions (${mode} run)`, {
        "raw VirtualMachine create (ceiling)": ceiling.samples,
        [`create -> Running, ${plan.rig1.vms} VMs at ${plan.rig1.ratePerSecond}/s`]:
          controlPlane.samples.createToRunning,
        ...Object.fromEntries(
          api.listVirtualMachines.map((l) => [`listVirtualMachines, ${l.vms} VMs`, l.samples]),
        ),
        ...("skipped" in qemu ? {} : { "real QEMU: create -> guest IP": qemu.samples }),
      }),
    );
    await writeFile(
      join(outDir, "throughput.svg"),
      await throughputOverTime(`VMs per second, ${plan.rig1.hosts} simulated hosts (${mode} run)`, {
        created: controlPlane.series.created,
        Running: controlPlane.series.running,
      }),
    );
    const summary = report(results);
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

await main();

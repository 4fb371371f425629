// Keeps `npm run bench` working: the benchmark's smallest mode runs every rig end to end on its
// own control plane and writes consistent results. Figures are not judged here (they belong to
// the benchmark, on a quiet machine); only that each rig measured what it says it measured.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "./support.ts";

describe("npm run bench (smoke mode)", () => {
  let out: string;
  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it("runs the ceiling, both rigs and the CloudStack API rig, and reports them beside the anchors", async () => {
    out = await mkdtemp(join(tmpdir(), "stratus-bench-smoke-"));
    const bench = await run(process.execPath, ["bench/run.ts", "--smoke", `--out=${out}`]);
    expect(bench.code, `${bench.stderr}\n${bench.stdout}`).toBe(0);
    const results = JSON.parse(await readFile(join(out, "results.json"), "utf8"));

    expect(results.ceiling.objects).toBe(40);
    expect(results.ceiling.latency.count).toBe(40);
    expect(results.ceiling.createsPerSecond).toBeGreaterThan(0);

    const rig = results.controlPlane;
    expect(rig.createToRunning.count).toBe(20);
    expect(rig.burstCreateToRunning.count).toBe(10);
    expect(rig.createToRunning.p50).toBeGreaterThan(0);
    for (const phase of ["Scheduled", "VolumesReady", "Running"]) expect(rig.phases[phase].count).toBe(20);
    // Each VM was created once, by the benchmark; the rest is the control plane's own work.
    expect(rig.requestsPerVm["POST virtualmachines"]).toBe(1);
    expect(rig.writesPerVm).toBeGreaterThan(1);
    expect(rig.memory.operatorRss).toBeGreaterThan(10 * 1024 * 1024);
    expect(Object.keys(rig.queueWaitP99)).toEqual(expect.arrayContaining(["compute", "fabric-host-monitor"]));

    expect(results.cloudStackApi.listVirtualMachines.map((l: { vms: number }) => l.vms)).toEqual([50]);
    expect(results.cloudStackApi.queryAsyncJobResult.count).toBe(15);
    if (!("skipped" in results.qemu)) expect(results.qemu.createToGuestIp.count).toBe(1);

    const summary = await readFile(join(out, "summary.txt"), "utf8");
    expect(summary).toContain("KubeVirt 0.62 / 1.36 / 1.88 s");
    expect(summary).toContain("Where goals are missed:");
    for (const plot of ["latency.svg", "throughput.svg"])
      expect(await readFile(join(out, plot), "utf8")).toMatch(/^<svg [^>]*>.*<\/svg>$/s);
  }, 600_000);
});

// Keeps `npm run bench` working: the benchmark's smallest mode runs every rig end to end on its
// own control plane and writes consistent results, and a tiny scale run grows a cluster of fleet
// hosts in two stages. Figures are not judged here (they belong to the benchmark, on a quiet
// machine); only that each rig measured what it says it measured.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "./support.ts";

interface CpuUse {
  seconds: number;
  msPerVm: number;
  share: number;
}

/** The CPU figures of a phase add up: every process that ran used some, shares sum to one. */
function expectConsistentCpu(cpu: Record<string, CpuUse>, vms: number, ran: string[]): void {
  for (const role of ran) expect(cpu[role]?.seconds, `${role} CPU seconds`).toBeGreaterThan(0);
  const shares = Object.values(cpu).reduce((sum, use) => sum + use.share, 0);
  expect(shares).toBeCloseTo(1, 5);
  for (const [role, use] of Object.entries(cpu))
    expect((use.msPerVm * vms) / 1000, `${role} seconds = ms per VM x VMs`).toBeCloseTo(use.seconds, 5);
}

describe("npm run bench (smoke mode)", () => {
  const outs: string[] = [];
  afterAll(async () => {
    for (const out of outs) await rm(out, { recursive: true, force: true });
  });

  it("runs the ceiling, rig 1 with one process per host and in fleet mode, the API rig and QEMU, and reports them beside the anchors and goals", async () => {
    const out = await mkdtemp(join(tmpdir(), "stratus-bench-smoke-"));
    outs.push(out);
    const bench = await run(process.execPath, ["bench/run.ts", "--smoke", `--out=${out}`]);
    expect(bench.code, `${bench.stderr}\n${bench.stdout}`).toBe(0);
    const results = JSON.parse(await readFile(join(out, "results.json"), "utf8"));

    expect(results.ceiling.objects).toBe(40);
    expect(results.ceiling.latency.count).toBe(40);
    expect(results.ceiling.createsPerSecond).toBeGreaterThan(0);

    expect(Object.keys(results.controlPlane)).toEqual(["processes", "fleet"]);
    for (const mode of ["processes", "fleet"]) {
      const rig = results.controlPlane[mode];
      expect(rig.options.agents).toBe(mode);
      expect(rig.hostsRegistered).toBe(2);
      expect(rig.agentProcesses).toBe(mode === "fleet" ? 1 : 2);
      expect(rig.createToRunning.count).toBe(20);
      expect(rig.burstCreateToRunning.count).toBe(10);
      expect(rig.createToRunning.p50).toBeGreaterThan(0);
      for (const phase of ["Scheduled", "VolumesReady", "Running"]) expect(rig.phases[phase].count).toBe(20);
      // Each VM was created once, by the benchmark; the rest is the control plane's own work.
      expect(rig.requestsPerVm["POST virtualmachines"]).toBe(1);
      expect(rig.writesPerVm).toBeGreaterThan(1);
      expect(rig.memory.operatorRss).toBeGreaterThan(10 * 1024 * 1024);
      expect(Object.keys(rig.queueWaitP99)).toEqual(expect.arrayContaining(["compute"]));
      const ran = ["kube-apiserver", "etcd", "operator", "agents", "benchmark"];
      expectConsistentCpu(rig.cpu.fixedRate, 20, ran);
      expectConsistentCpu(rig.cpu.burst, 10, ran);
    }

    const api = results.cloudStackApi;
    expect(api.listVirtualMachines.map((l: { vms: number }) => l.vms)).toEqual([50]);
    expect(api.queryAsyncJobResult.count).toBe(15);
    expectConsistentCpu(api.cpu, 50, ["kube-apiserver", "API component", "benchmark"]);
    // A 1 MiB request signed right and wrong, and one listall over the accounts (one cluster-wide review).
    expect(api.largeRequest.signed.count).toBe(5);
    expect(api.largeRequest.badSignature.count).toBe(5);
    expect(api.largeRequest.bytes).toBeGreaterThan(900_000);
    expect(api.listAll.accounts).toBe(6);
    expect(api.listAll.reviews).toBeGreaterThan(0);
    expect(api.listAll.reviews).toBeLessThanOrEqual(2);
    if (!("skipped" in results.qemu)) expect(results.qemu.createToGuestIp.count).toBe(1);

    const summary = await readFile(join(out, "summary.txt"), "utf8");
    expect(summary).toContain("KubeVirt 0.62 / 1.36 / 1.88 s");
    expect(summary).toMatch(/<= 6 API writes per VM start \(fleet\)\s+\S+\s+(met|MISSED)/);
    expect(summary).toContain("fleet process(es)");
    expect(summary).toContain("Where goals are missed:");
    for (const plot of ["latency.svg", "throughput.svg"])
      expect(await readFile(join(out, plot), "utf8")).toMatch(/^<svg [^>]*>.*<\/svg>$/s);
  }, 900_000);

  it("runs HA fault trials of every kind and finds no VM on two hosts, every VM running again", async () => {
    const out = await mkdtemp(join(tmpdir(), "stratus-bench-ha-"));
    outs.push(out);
    const bench = await run(process.execPath, ["bench/run.ts", "--ha", "--smoke", `--out=${out}`]);
    expect(bench.code, `${bench.stderr}\n${bench.stdout}`).toBe(0);
    const { ha } = JSON.parse(await readFile(join(out, "results.json"), "utf8"));
    expect(ha.trials).toBe(5);
    expect(Object.values(ha.byFault)).toEqual([1, 1, 1, 1, 1]);
    expect(ha.twice).toEqual([]);
    expect(ha.failures).toEqual([]);
    expect(ha.operatorKills).toBe(1);
    expect(ha.samplingRounds).toBeGreaterThan(10);
    // Every VM of every trial ran again (a host holds one VM here, or more after a failover).
    expect(ha.restartSeconds.count).toBeGreaterThanOrEqual(5);
    expect(ha.fencedSeconds.count).toBe(2);
    expect(await readFile(join(out, "summary.txt"), "utf8")).toContain(
      "a VM on two hosts at once      never",
    );
  }, 600_000);

  it("grows a cluster of fleet hosts in stages and reports memory, listVirtualMachines and one agent's watch traffic", async () => {
    const out = await mkdtemp(join(tmpdir(), "stratus-bench-scale-"));
    outs.push(out);
    const bench = await run(process.execPath, [
      "bench/run.ts",
      "--scale",
      "--scale-stages=2:6,5:15",
      "--hosts-per-fleet=2",
      `--out=${out}`,
    ]);
    expect(bench.code, `${bench.stderr}\n${bench.stdout}`).toBe(0);
    const { scale } = JSON.parse(await readFile(join(out, "results.json"), "utf8"));
    expect(scale.stoppedAt).toBeUndefined();
    expect(scale.stages.map((s: { hosts: number; vms: number }) => [s.hosts, s.vms])).toEqual([
      [2, 6],
      [5, 15],
    ]);
    for (const [i, stage] of scale.stages.entries()) {
      expect(stage.completed).toBe(true);
      expect(stage.hostsRegistered).toBe(stage.hosts);
      expect(stage.running).toBe(stage.vms);
      expect(stage.listVirtualMachines.count).toBe(20);
      // Each stage watches a host that is new in it: sim-0000, then sim-0002.
      expect(stage.observer.host).toBe(i === 0 ? "sim-0000" : "sim-0002");
      expect(stage.observer.ownVms).toBeGreaterThan(0);
      expect(stage.observer.eventsByResource.virtualmachines).toBeGreaterThan(0);
      expectConsistentCpu(stage.cpu, i === 0 ? 6 : 9, ["kube-apiserver", "etcd", "operator", "agents"]);
    }
    const summary = await readFile(join(out, "summary.txt"), "utf8");
    expect(summary).toMatch(/1000 hosts and 20000 VMs complete\s+.*MISSED/);
    expect(summary).toMatch(/per-agent watch traffic flat .*(met|MISSED)/);
  }, 600_000);
});

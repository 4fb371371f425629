// The terminal table of a benchmark run: each figure beside its goal and KubeVirt's published
// anchor, and, where a goal is missed, what dominates (a phase of coming up, or an API call).

import type { Summary } from "./lib/stats.ts";
import type { CeilingResult } from "./rigs/ceiling.ts";
import type { ApiResult } from "./rigs/cloudstack-api.ts";
import type { ControlPlaneResult } from "./rigs/control-plane.ts";
import type { QemuResult } from "./rigs/qemu.ts";

/** KubeVirt's control-plane test with 8,000 simulated VMs (its CI's published figures). */
export const KUBEVIRT = {
  createToRunning: { p50: 0.62, p95: 1.36, p99: 1.88 },
  controllerMemoryPerVmKb: [170, 325],
  apiWritesPerVmStart: [10, 32],
};

export const GOALS = {
  p99CreateToRunningSeconds: 1,
  writesPerVm: 8,
  operatorKbPerVm: 100,
  throughputShareOfCeiling: 0.5,
};

interface Results {
  mode: string;
  date: string;
  machine: { cpus: number; node: string };
  ceiling: Omit<CeilingResult, "samples"> & { samples?: undefined };
  controlPlane: Omit<ControlPlaneResult, "samples"> & { samples?: undefined };
  cloudStackApi: Omit<ApiResult, "listVirtualMachines"> & {
    listVirtualMachines: { vms: number; latency: Summary }[];
  };
  qemu:
    | { skipped: string }
    | (Omit<Exclude<QemuResult, { skipped: string }>, "samples"> & { samples?: undefined });
}

const ms = (seconds: number) => `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0)} ms`;
const s = (seconds: number) => `${seconds.toFixed(2)} s`;
const kb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KB`;
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`;
const pct = (share: number) => `${(share * 100).toFixed(0)} %`;
const verdict = (met: boolean) => (met ? "met" : "MISSED");

export function report(results: Results): string {
  const { ceiling, controlPlane: rig, cloudStackApi: api, qemu } = results;
  const o = rig.options;
  const lines: string[] = [];
  const row = (what: string, value: string, beside = "") =>
    lines.push(`  ${what.padEnd(46)} ${value.padEnd(28)} ${beside}`);
  lines.push(
    `Stratus benchmark, ${results.mode} run, ${results.date} (${results.machine.cpus} CPUs, Node ${results.machine.node})`,
    "",
    `Ceiling: raw VirtualMachine creates, same API server, concurrency ${ceiling.concurrency}`,
  );
  row("creates per second", ceiling.createsPerSecond.toFixed(0));
  row(
    "create latency p50 / p95 / p99",
    `${ms(ceiling.latency.p50)} / ${ms(ceiling.latency.p95)} / ${ms(ceiling.latency.p99)}`,
  );

  const c = rig.createToRunning;
  const share = rig.burstRunningPerSecond / ceiling.createsPerSecond;
  const operatorKb = rig.memory.operatorRssPerVm / 1024;
  lines.push(
    "",
    `Rig 1: control plane alone, ${o.hosts} simulated hosts, ${o.vms} VMs at ${o.ratePerSecond}/s, then a burst of ${o.burst}`,
  );
  row(
    "create -> Running p50 / p95 / p99",
    `${s(c.p50)} / ${s(c.p95)} / ${s(c.p99)}`,
    `KubeVirt ${KUBEVIRT.createToRunning.p50} / ${KUBEVIRT.createToRunning.p95} / ${KUBEVIRT.createToRunning.p99} s; goal p99 <= ${GOALS.p99CreateToRunningSeconds} s: ${verdict(c.p99 <= GOALS.p99CreateToRunningSeconds)}`,
  );
  for (const [step, phase] of Object.entries(rig.phases))
    row(`  create -> ${step} p50 / p99`, `${s(phase.p50)} / ${s(phase.p99)}`);
  row(
    "sustained Running per second (steady part)",
    rig.sustainedPerSecond.toFixed(1),
    `offered ${o.ratePerSecond}/s`,
  );
  row(
    "burst: Running per second",
    rig.burstRunningPerSecond.toFixed(1),
    `${pct(share)} of the ceiling; goal >= ${pct(GOALS.throughputShareOfCeiling)}: ${verdict(share >= GOALS.throughputShareOfCeiling)}`,
  );
  row(
    "burst: create -> Running p50 / p99",
    `${s(rig.burstCreateToRunning.p50)} / ${s(rig.burstCreateToRunning.p99)}`,
  );
  row(
    "API writes per VM (leases apart)",
    rig.writesPerVm.toFixed(1),
    `KubeVirt ${KUBEVIRT.apiWritesPerVmStart.join("-")}; goal <= ${GOALS.writesPerVm}: ${verdict(rig.writesPerVm <= GOALS.writesPerVm)}`,
  );
  row("  of which reached etcd (no-op applies do not)", rig.etcdWritesPerVm.toFixed(1));
  row("host heartbeat writes per second", rig.heartbeatWritesPerSecond.toFixed(1), `${o.hosts} hosts`);
  row(
    "operator memory per VM (RSS growth)",
    kb(rig.memory.operatorRssPerVm),
    `KubeVirt ${KUBEVIRT.controllerMemoryPerVmKb.join("-")} KB; goal <= ${GOALS.operatorKbPerVm} KB: ${verdict(operatorKb <= GOALS.operatorKbPerVm)}`,
  );
  row("operator heap per VM", kb(rig.memory.operatorHeapPerVm));
  row("host agents' memory per VM (all hosts)", kb(rig.memory.agentsRssPerVm));
  row(
    "RSS: operator / kube-apiserver / etcd",
    `${mb(rig.memory.operatorRss)} / ${mb(rig.memory.apiServerRss)} / ${mb(rig.memory.etcdRss)}`,
  );
  lines.push("  operator controllers: queue wait p99, reconciles per VM, reconcile p99, retries per VM");
  for (const [queue, p99] of Object.entries(rig.queueWaitP99)) {
    const c = rig.controllers[queue];
    row(
      `    ${queue}`,
      `${s(p99)}${c ? `  ${c.reconcilesPerVm.toFixed(1)}  ${ms(c.reconcileP99)}  ${c.retriesPerVm.toFixed(2)}` : ""}`,
    );
  }
  lines.push("  API requests per VM, by verb and resource:");
  for (const [key, perVm] of Object.entries(rig.requestsPerVm).slice(0, 14))
    row(`    ${key}`, perVm.toFixed(2));

  lines.push("", "CloudStack-compatible API (sequential requests)");
  for (const list of api.listVirtualMachines)
    row(
      `listVirtualMachines, ${list.vms} VMs: p50 / p95 / p99`,
      `${ms(list.latency.p50)} / ${ms(list.latency.p95)} / ${ms(list.latency.p99)}`,
    );
  const q = api.queryAsyncJobResult;
  row("queryAsyncJobResult p50 / p95 / p99", `${ms(q.p50)} / ${ms(q.p95)} / ${ms(q.p99)}`);
  row("API component RSS", mb(api.apiComponentRss));

  lines.push("", "Rig 2: real QEMU (software emulation), a burst from the tiny template");
  if ("skipped" in qemu) row("skipped", qemu.skipped);
  else {
    row(
      `create -> Running, ${qemu.vms} VMs: p50 / p95`,
      `${s(qemu.createToRunning.p50)} / ${s(qemu.createToRunning.p95)}`,
    );
    row(
      `create -> guest IP (DHCP lease): p50 / p95`,
      `${s(qemu.createToGuestIp.p50)} / ${s(qemu.createToGuestIp.p95)}`,
    );
  }

  lines.push("", "Where goals are missed:");
  const misses = diagnose(results);
  lines.push(...(misses.length ? misses.map((m) => `  - ${m}`) : ["  - none"]), "");
  return `${lines.join("\n")}\n`;
}

/** The obvious next step for each missed goal: the slowest phase, the heaviest calls. */
function diagnose(results: Results): string[] {
  const { ceiling, controlPlane: rig } = results;
  const misses: string[] = [];
  if (rig.createToRunning.p99 > GOALS.p99CreateToRunningSeconds) {
    const [queue, wait] = Object.entries(rig.queueWaitP99)
      .filter(([, p99]) => Number.isFinite(p99))
      .sort((a, b) => b[1] - a[1])[0] as [string, number];
    const late = Object.entries(rig.phases)
      .map(([step, phase]) => `${step} ${s(phase.p99)}`)
      .join(", ");
    misses.push(
      `create -> Running p99 ${s(rig.createToRunning.p99)} (steps p99 after create: ${late}); the longest queue wait is ${queue}'s, ${s(wait)} at p99${queue in rig.controllers ? `, with ${rig.controllers[queue]?.reconcilesPerVm.toFixed(1)} reconciles per VM of ${ms(rig.controllers[queue]?.reconcileP99 ?? Number.NaN)} p99` : ""}.`,
    );
  }
  if (rig.writesPerVm > GOALS.writesPerVm) {
    const writes = Object.entries(rig.requestsPerVm)
      .filter(([key]) => !key.startsWith("GET") && !key.startsWith("LIST") && !key.startsWith("WATCH"))
      .slice(0, 4)
      .map(([key, n]) => `${key} ${n.toFixed(1)}`);
    misses.push(`${rig.writesPerVm.toFixed(1)} writes per VM; the most: ${writes.join(", ")}.`);
  }
  if (rig.memory.operatorRssPerVm / 1024 > GOALS.operatorKbPerVm)
    misses.push(
      `operator RSS grows ${kb(rig.memory.operatorRssPerVm)} per VM (heap ${kb(rig.memory.operatorHeapPerVm)}): informer caches hold every VM, Volume and IPAddress in full.`,
    );
  const share = rig.burstRunningPerSecond / ceiling.createsPerSecond;
  if (share < GOALS.throughputShareOfCeiling)
    misses.push(
      `burst throughput is ${pct(share)} of the raw create ceiling; each VM costs ${rig.writesPerVm.toFixed(1)} writes against the ceiling's 1, and the slowest queue waits ${s(Math.max(...Object.values(rig.queueWaitP99).filter(Number.isFinite)))} at p99.`,
    );
  return misses;
}

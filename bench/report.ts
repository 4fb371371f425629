// The terminal table of a benchmark run: each figure beside its goal and KubeVirt's published
// anchor, and, where a goal is missed, what dominates (a phase of coming up, or an API call).

import type { CpuUse } from "./lib/cpu.ts";
import type { AgentMode } from "./lib/hosts.ts";
import type { Summary } from "./lib/stats.ts";
import type { CeilingResult } from "./rigs/ceiling.ts";
import type { ApiResult } from "./rigs/cloudstack-api.ts";
import type { ControlPlaneResult } from "./rigs/control-plane.ts";
import type { QemuResult } from "./rigs/qemu.ts";
import type { ScaleResult, ScaleStage } from "./rigs/scale.ts";

/** KubeVirt's control-plane test with 8,000 simulated VMs (its CI's published figures). */
export const KUBEVIRT = {
  createToRunning: { p50: 0.62, p95: 1.36, p99: 1.88 },
  controllerMemoryPerVmKb: [170, 325],
  apiWritesPerVmStart: [10, 32],
};

/** The goals of issue 14; each report row says met or MISSED. */
export const GOALS = {
  writesPerVm: 6,
  /** At 10 VMs/s with 2,000 VMs on 50 simulated hosts (the full run), fleet mode. */
  p99CreateToRunningSeconds: 1,
  burstRunningPerSecond: 40,
  operatorKbPerVm: 100,
  scale: { hosts: 1000, vms: 20000 },
  /** Per-agent watch events per own VM at the largest stage over the smallest: flat means about 1. */
  watchTrafficGrowth: 1.5,
  qemuGuestIpP50Seconds: 3,
};

type Rig1 = Omit<ControlPlaneResult, "samples"> & { samples?: undefined };

interface Results {
  mode: string;
  date: string;
  machine: { cpus: number; node: string };
  ceiling: Omit<CeilingResult, "samples"> & { samples?: undefined };
  controlPlane: Partial<Record<AgentMode, Rig1>>;
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

/** Rows of a table: a label, then one value per column, then what it is compared with. */
class Table {
  readonly lines: string[] = [];
  private readonly width: number;
  constructor(width = 54) {
    this.width = width;
  }
  row(what: string, values: string[], beside = ""): void {
    this.lines.push(
      `  ${what.padEnd(this.width)} ${values.map((v) => v.padEnd(28)).join(" ")} ${beside}`.trimEnd(),
    );
  }
  text(...lines: string[]): void {
    this.lines.push(...lines);
  }
}

/** A CPU table: per process role, ms per VM and share of the phase, one column per run. */
function cpuRows(table: Table, columns: Record<string, CpuUse>[]): void {
  const roles = [...new Set(columns.flatMap((c) => Object.keys(c)))];
  for (const role of roles)
    table.row(
      `    ${role}`,
      columns.map((c) => {
        const use = c[role];
        return use ? `${use.msPerVm.toFixed(1)} ms (${pct(use.share)})` : "-";
      }),
    );
}

export function report(results: Results): string {
  const { ceiling, cloudStackApi: api, qemu } = results;
  const rigs = Object.entries(results.controlPlane) as [AgentMode, Rig1][];
  const t = new Table();
  t.text(
    `Stratus benchmark, ${results.mode} run, ${results.date} (${results.machine.cpus} CPUs, Node ${results.machine.node})`,
    "",
    `Ceiling: raw VirtualMachine creates, same API server, concurrency ${ceiling.concurrency}`,
  );
  t.row("creates per second", [ceiling.createsPerSecond.toFixed(0)]);
  t.row("create latency p50 / p95 / p99", [
    `${ms(ceiling.latency.p50)} / ${ms(ceiling.latency.p95)} / ${ms(ceiling.latency.p99)}`,
  ]);

  const o = rigs[0]?.[1].options;
  if (o) {
    t.text(
      "",
      `Rig 1: control plane alone, ${o.hosts} simulated hosts, ${o.vms} VMs at ${o.ratePerSecond}/s, then a burst of ${o.burst}`,
    );
    const each = (value: (rig: Rig1) => string) => rigs.map(([, rig]) => value(rig));
    t.row(
      "simulated hosts run by",
      rigs.map(([mode, rig]) =>
        mode === "fleet"
          ? `${rig.agentProcesses} fleet process(es)`
          : `${rig.agentProcesses} agent processes`,
      ),
    );
    t.row(
      "hosts registered",
      each((r) => `${r.hostsRegistered} of ${r.options.hosts}`),
    );
    t.row(
      "create -> Running p50 / p95 / p99",
      each((r) => `${s(r.createToRunning.p50)} / ${s(r.createToRunning.p95)} / ${s(r.createToRunning.p99)}`),
      `KubeVirt ${KUBEVIRT.createToRunning.p50} / ${KUBEVIRT.createToRunning.p95} / ${KUBEVIRT.createToRunning.p99} s`,
    );
    for (const step of Object.keys(rigs[0]?.[1].phases ?? {}))
      t.row(
        `  create -> ${step} p50 / p99`,
        each((r) => {
          const phase = r.phases[step as keyof Rig1["phases"]];
          return `${s(phase.p50)} / ${s(phase.p99)}`;
        }),
      );
    t.row(
      "sustained Running per second (steady part)",
      each((r) => r.sustainedPerSecond.toFixed(1)),
      `offered ${o.ratePerSecond}/s`,
    );
    t.row(
      "burst: Running per second",
      each(
        (r) =>
          `${r.burstRunningPerSecond.toFixed(1)} (${pct(r.burstRunningPerSecond / ceiling.createsPerSecond)} of ceiling)`,
      ),
    );
    t.row(
      "burst: create -> Running p50 / p99",
      each((r) => `${s(r.burstCreateToRunning.p50)} / ${s(r.burstCreateToRunning.p99)}`),
    );
    t.row(
      "API writes per VM (leases apart)",
      each((r) => r.writesPerVm.toFixed(1)),
      `KubeVirt ${KUBEVIRT.apiWritesPerVmStart.join("-")}`,
    );
    t.row(
      "  of which reached etcd (no-op applies do not)",
      each((r) => r.etcdWritesPerVm.toFixed(1)),
    );
    t.row(
      "host heartbeat writes per second",
      each((r) => r.heartbeatWritesPerSecond.toFixed(1)),
    );
    t.row(
      "operator memory per VM (RSS growth; heap)",
      each((r) => `${kb(r.memory.operatorRssPerVm)} (${kb(r.memory.operatorHeapPerVm)})`),
      `KubeVirt ${KUBEVIRT.controllerMemoryPerVmKb.join("-")} KB`,
    );
    t.row(
      "host agents' memory per VM (all hosts)",
      each((r) => kb(r.memory.agentsRssPerVm)),
    );
    t.row(
      "RSS: operator / kube-apiserver / etcd",
      each((r) => `${mb(r.memory.operatorRss)} / ${mb(r.memory.apiServerRss)} / ${mb(r.memory.etcdRss)}`),
    );
    t.text("  CPU per VM and share of all the run's CPU, fixed-rate phase:");
    cpuRows(
      t,
      rigs.map(([, r]) => r.cpu.fixedRate),
    );
    t.text("  CPU per VM and share, burst:");
    cpuRows(
      t,
      rigs.map(([, r]) => r.cpu.burst),
    );
    t.text("  operator controllers: queue wait p99, reconciles per VM, reconcile p99, retries per VM");
    const queues = [...new Set(rigs.flatMap(([, r]) => Object.keys(r.queueWaitP99)))];
    for (const queue of queues)
      t.row(
        `    ${queue}`,
        each((r) => {
          const p99 = r.queueWaitP99[queue];
          const c = r.controllers[queue];
          return `${p99 === undefined ? "-" : s(p99)}${c ? `  ${c.reconcilesPerVm.toFixed(1)}  ${ms(c.reconcileP99)}  ${c.retriesPerVm.toFixed(2)}` : ""}`;
        }),
      );
    t.text("  API requests per VM, by verb and resource:");
    const keys = Object.keys(rigs[0]?.[1].requestsPerVm ?? {}).slice(0, 14);
    for (const key of keys)
      t.row(
        `    ${key}`,
        each((r) => (r.requestsPerVm[key] ?? 0).toFixed(2)),
      );
    t.text(
      `  (columns: ${rigs.map(([mode]) => (mode === "fleet" ? "fleet mode" : "one process per host")).join(", ")})`,
    );
  }

  t.text("", "CloudStack-compatible API (sequential requests)");
  for (const list of api.listVirtualMachines)
    t.row(`listVirtualMachines, ${list.vms} VMs: p50 / p95 / p99`, [
      `${ms(list.latency.p50)} / ${ms(list.latency.p95)} / ${ms(list.latency.p99)}`,
    ]);
  const q = api.queryAsyncJobResult;
  t.row("queryAsyncJobResult p50 / p95 / p99", [`${ms(q.p50)} / ${ms(q.p95)} / ${ms(q.p99)}`]);
  const large = api.largeRequest;
  if (large) {
    const kib = Math.round(large.bytes / 1024);
    t.row(`${kib} KiB listZones, signed: p50 / p99`, [`${ms(large.signed.p50)} / ${ms(large.signed.p99)}`]);
    t.row(`${kib} KiB listZones, wrong signature (401): p50 / p99`, [
      `${ms(large.badSignature.p50)} / ${ms(large.badSignature.p99)}`,
    ]);
  }
  if (api.listAll)
    t.row(`listall over ${api.listAll.accounts}+ accounts: access reviews`, [String(api.listAll.reviews)]);
  t.row("API component RSS", [mb(api.apiComponentRss)]);
  if (api.cpu) {
    t.text("  CPU per VM in the account (creates, caching, requests) and share:");
    cpuRows(t, [api.cpu]);
  }

  t.text("", "Rig 2: real QEMU, a burst from the tiny template");
  if ("skipped" in qemu) t.row("skipped", [qemu.skipped]);
  else {
    t.row(`create -> Running, ${qemu.vms} VMs: p50 / p95`, [
      `${s(qemu.createToRunning.p50)} / ${s(qemu.createToRunning.p95)}`,
    ]);
    t.row(
      `create -> guest IP (DHCP lease): p50 / p95`,
      [`${s(qemu.createToGuestIp.p50)} / ${s(qemu.createToGuestIp.p95)}`],
      "KubeVirt CI on real nodes: p50 17 s",
    );
  }

  t.text("", "Goals:");
  for (const goal of goals(results)) t.row(goal.what, [goal.value], goal.verdict);

  t.text("", "Where goals are missed:");
  const misses = diagnose(results);
  t.text(...(misses.length ? misses.map((m) => `  - ${m}`) : ["  - none"]), "");
  return `${t.lines.join("\n")}\n`;
}

interface Goal {
  what: string;
  value: string;
  verdict: string;
}

function goals(results: Results): Goal[] {
  const rows: Goal[] = [];
  const fullSize = (r: Rig1) =>
    r.options.hosts === 50 && r.options.vms === 2000 && r.options.ratePerSecond === 10;
  for (const [mode, rig] of Object.entries(results.controlPlane) as [AgentMode, Rig1][]) {
    const label = mode === "fleet" ? "fleet" : "process per host";
    rows.push({
      what: `<= ${GOALS.writesPerVm} API writes per VM start (${label})`,
      value: rig.writesPerVm.toFixed(1),
      verdict: verdict(rig.writesPerVm <= GOALS.writesPerVm),
    });
    rows.push({
      what: `create->Running p99 <= ${GOALS.p99CreateToRunningSeconds} s (${label})`,
      value: s(rig.createToRunning.p99),
      verdict: `${verdict(rig.createToRunning.p99 <= GOALS.p99CreateToRunningSeconds)}${fullSize(rig) ? "" : ` (set for 2,000 VMs on 50 hosts at 10/s; this run: ${rig.options.vms} on ${rig.options.hosts})`}`,
    });
    rows.push({
      what: `burst >= ${GOALS.burstRunningPerSecond} Running VMs/s (${label})`,
      value: `${rig.burstRunningPerSecond.toFixed(1)}/s`,
      verdict: verdict(rig.burstRunningPerSecond >= GOALS.burstRunningPerSecond),
    });
    rows.push({
      what: `operator memory per VM <= ${GOALS.operatorKbPerVm} KB (${label})`,
      value: kb(rig.memory.operatorRssPerVm),
      verdict: verdict(rig.memory.operatorRssPerVm / 1024 <= GOALS.operatorKbPerVm),
    });
  }
  rows.push({
    what: `${GOALS.scale.hosts} hosts / ${GOALS.scale.vms} VMs complete; watch traffic flat`,
    value: "npm run bench:scale",
    verdict: "judged by the scale run (bench/results/scale/)",
  });
  const qemu = results.qemu;
  rows.push({
    what: `real QEMU create -> guest DHCP lease p50 <= ${GOALS.qemuGuestIpP50Seconds} s`,
    value: "skipped" in qemu ? "skipped" : s(qemu.createToGuestIp.p50),
    verdict:
      "skipped" in qemu ? "not measured" : verdict(qemu.createToGuestIp.p50 <= GOALS.qemuGuestIpP50Seconds),
  });
  return rows;
}

interface ScaleResults {
  mode: string;
  date: string;
  machine: { cpus: number; node: string };
  scale: ScaleResult;
}

/** The scale run's table: each stage, and the goals it judges. */
export function reportScale(results: ScaleResults): string {
  const { scale } = results;
  const stages = scale.stages;
  const t = new Table(50);
  t.text(
    `Stratus scale run, ${results.date} (${results.machine.cpus} CPUs, Node ${results.machine.node}), hosts in fleets of ${scale.options.hostsPerFleet}`,
    "",
  );
  const each = (value: (stage: ScaleStage) => string) => stages.map(value);
  t.row(
    "stage: hosts / VMs",
    each((st) => `${st.hosts} / ${st.vms}`),
  );
  t.row(
    "completed (every VM Running)",
    each((st) => (st.completed ? "yes" : "NO")),
  );
  t.row(
    "hosts registered / VMs created in the stage / Running",
    each((st) => `${st.hostsRegistered} / ${st.created} / ${st.running}`),
  );
  t.row(
    "seconds: hosts up, creates sent, all Running",
    each(
      (st) =>
        `${st.seconds.hostsUp.toFixed(0)}, ${st.seconds.creates.toFixed(0)}, ${st.seconds.untilRunning.toFixed(0)}`,
    ),
  );
  t.row(
    "memory per VM: kube-apiserver / etcd / operator",
    each(
      (st) =>
        `${kb(st.memoryPerVm.kubeApiServer)} / ${kb(st.memoryPerVm.etcd)} / ${kb(st.memoryPerVm.operator)}`,
    ),
  );
  t.row(
    "RSS: kube-apiserver / etcd / operator",
    each((st) => `${mb(st.rss.kubeApiServer)} / ${mb(st.rss.etcd)} / ${mb(st.rss.operator)}`),
  );
  t.row(
    "RSS of the fleets (all hosts)",
    each((st) => mb(st.rss.fleets)),
  );
  t.row(
    "listVirtualMachines p50 / p99",
    each((st) =>
      st.listVirtualMachines ? `${ms(st.listVirtualMachines.p50)} / ${ms(st.listVirtualMachines.p99)}` : "-",
    ),
  );
  t.text("  one agent's watch traffic while the stage's VMs came up (a host new in the stage):");
  t.row(
    "    host, its VMs",
    each((st) => `${st.observer.host}, ${st.observer.ownVms}`),
  );
  t.row(
    "    watch events received (bookmarks apart)",
    each((st) => String(st.observer.events)),
  );
  t.row(
    "    per VM of its own",
    each((st) => st.observer.eventsPerOwnVm.toFixed(1)),
  );
  t.row(
    "    per VM created in the cluster",
    each((st) => st.observer.eventsPerClusterVm.toFixed(2)),
  );
  const resources = [...new Set(stages.flatMap((st) => Object.keys(st.observer.eventsByResource)))];
  for (const resource of resources)
    t.row(
      `      ${resource}`,
      each((st) => String(st.observer.eventsByResource[resource] ?? 0)),
    );
  t.text("  CPU per VM created in the stage and share:");
  cpuRows(
    t,
    stages.map((st) => st.cpu),
  );

  const last = stages.at(-1);
  const first = stages[0];
  const complete = stages.some(
    (st) => st.completed && st.hosts >= GOALS.scale.hosts && st.vms >= GOALS.scale.vms,
  );
  const growth =
    first && last && last !== first
      ? last.observer.eventsPerOwnVm / first.observer.eventsPerOwnVm
      : Number.NaN;
  t.text("", "Goals:");
  t.row(
    `${GOALS.scale.hosts} hosts and ${GOALS.scale.vms} VMs complete`,
    [last ? `${last.hostsRegistered} hosts, ${last.running} Running` : "-"],
    verdict(complete),
  );
  t.row(
    `per-agent watch traffic flat (growth <= ${GOALS.watchTrafficGrowth}x)`,
    [Number.isFinite(growth) ? `${growth.toFixed(1)}x per own VM` : "one stage only"],
    Number.isFinite(growth) ? verdict(growth <= GOALS.watchTrafficGrowth) : "not judged",
  );
  if (scale.stoppedAt) t.text("", `Stopped: ${scale.stoppedAt}`);
  return `${t.lines.join("\n")}\n`;
}

/** The obvious next step for each missed goal: the slowest phase, the heaviest calls. */
function diagnose(results: Results): string[] {
  const misses: string[] = [];
  for (const [mode, rig] of Object.entries(results.controlPlane) as [AgentMode, Rig1][])
    misses.push(...diagnoseRig(rig, results.ceiling.createsPerSecond).map((m) => `${mode}: ${m}`));
  return misses;
}

function diagnoseRig(rig: Rig1, ceilingPerSecond: number): string[] {
  const misses: string[] = [];
  const slowestQueue = Object.entries(rig.queueWaitP99)
    .filter(([, p99]) => Number.isFinite(p99))
    .sort((a, b) => b[1] - a[1])[0];
  if (rig.createToRunning.p99 > GOALS.p99CreateToRunningSeconds) {
    const late = Object.entries(rig.phases)
      .map(([step, phase]) => `${step} ${s(phase.p99)}`)
      .join(", ");
    const [queue, wait] = slowestQueue ?? ["none", Number.NaN];
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
  if (rig.burstRunningPerSecond < GOALS.burstRunningPerSecond) {
    const top = Object.entries(rig.cpu.burst)
      .sort((a, b) => b[1].share - a[1].share)
      .slice(0, 2)
      .map(([role, use]) => `${role} ${pct(use.share)}`)
      .join(", ");
    misses.push(
      `burst ${rig.burstRunningPerSecond.toFixed(1)} Running/s, ${pct(rig.burstRunningPerSecond / ceilingPerSecond)} of the raw create ceiling; each VM costs ${rig.writesPerVm.toFixed(1)} writes against the ceiling's 1; the CPU goes to ${top}${slowestQueue ? `; the slowest queue (${slowestQueue[0]}) waits ${s(slowestQueue[1])} at p99` : ""}.`,
    );
  }
  return misses;
}

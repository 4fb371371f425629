// The summary of an HA fault-trials run (`npm run bench:ha`).
import type { Summary } from "./lib/stats.ts";
import { FAULTS, type HaTrialsResult } from "./rigs/ha-trials.ts";

export interface HaResults {
  mode: string;
  date: string;
  machine: { cpus: number; node: string };
  ha: HaTrialsResult;
}

const seconds = (s: Summary) =>
  s.count === 0
    ? "-"
    : `p50 ${s.p50.toFixed(1)} s, p95 ${s.p95.toFixed(1)} s, p99 ${s.p99.toFixed(1)} s, max ${s.max.toFixed(1)} s (${s.count})`;

export function reportHa(results: HaResults): string {
  const { ha } = results;
  const o = ha.options;
  const lines = [
    `Stratus HA fault trials, ${results.date} (${results.machine.cpus} CPUs, Node ${results.machine.node})`,
    `${o.hosts} simulated hosts (one agent process each), ${o.hosts * o.vmsPerHost} HA VMs on a shared pool, ` +
      `Lease ${o.leaseSeconds} s, host grace ${o.graceSeconds} s, ${o.concurrency} trials at once`,
    "",
    `trials                         ${ha.trials} (${FAULTS.map((f) => `${f} ${ha.byFault[f]}`).join(", ")})`,
    `operator SIGKILLs              ${ha.operatorKills}`,
    `agents restarted outside trials ${ha.unplannedRestarts} (fenced while the API server did not answer)`,
    `sampling rounds (every host)   ${ha.samplingRounds}`,
    `a VM on two hosts at once      ${ha.twice.length === 0 ? "never" : `${ha.twice.length} sample(s): ${JSON.stringify(ha.twice.slice(0, 5))}`}`,
    `failed trials                  ${ha.failures.length}${ha.failures.length ? `: ${ha.failures.slice(0, 5).join("; ")}` : ""}`,
    `fault -> running again         ${seconds(ha.restartSeconds)}`,
    ...FAULTS.map((f) => `  ${f.padEnd(29)}${seconds(ha.restartSecondsByFault[f])}`),
    `freeze or cut -> fenced        ${seconds(ha.fencedSeconds)}`,
    `wall time                      ${ha.wallSeconds.toFixed(0)} s`,
    "",
  ];
  return lines.join("\n");
}

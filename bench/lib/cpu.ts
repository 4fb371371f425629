// Where the CPU goes: CPU seconds of each process of a run (kube-apiserver, etcd, the operator,
// the agents, the API component, the benchmark itself) from /proc/<pid>/stat, read at the start
// and the end of a phase, reported per VM and as a share of all the CPU the run's processes used.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** Ticks per second of /proc's times (CLK_TCK: 100 on every Linux this runs on; asked once). */
export const CLOCK_TICKS: number = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * User and system CPU ticks of one process from the text of /proc/<pid>/stat (fields 14 and 15).
 * The command name (field 2) is in parentheses and may hold spaces and parentheses itself, so the
 * fields are counted after its last ")".
 */
export function parseProcStat(text: string): { userTicks: number; systemTicks: number } {
  const end = text.lastIndexOf(")");
  if (end < 0) throw new Error(`not a /proc/<pid>/stat line: ${text.slice(0, 80)}`);
  // After ")": field 3 (state) is the first; utime is field 14, stime field 15.
  const fields = text
    .slice(end + 1)
    .trim()
    .split(/\s+/);
  const userTicks = Number(fields[14 - 3]);
  const systemTicks = Number(fields[15 - 3]);
  if (!Number.isFinite(userTicks) || !Number.isFinite(systemTicks))
    throw new Error(`/proc/<pid>/stat without utime/stime: ${text.slice(0, 80)}`);
  return { userTicks, systemTicks };
}

/** CPU seconds a process has used so far; undefined when it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  const { userTicks, systemTicks } = parseProcStat(text);
  return (userTicks + systemTicks) / CLOCK_TICKS;
}

/** Process role ("kube-apiserver", "agents", …) -> the pids that play it. */
export type ProcessRoles = Record<string, readonly number[]>;
/** Role -> CPU seconds summed over its pids. */
export type CpuSample = Record<string, number>;

export function sampleCpu(roles: ProcessRoles): CpuSample {
  const sample: CpuSample = {};
  for (const [role, pids] of Object.entries(roles))
    sample[role] = pids.reduce((total, pid) => total + (cpuSeconds(pid) ?? 0), 0);
  return sample;
}

export interface CpuUse {
  /** CPU seconds over the phase. */
  seconds: number;
  /** CPU milliseconds per VM of the phase. */
  msPerVm: number;
  /** Share of the CPU all the run's processes used over the phase. */
  share: number;
}

/** CPU per role between two samples, per VM and as a share of the total (roles only in `end` count from zero). */
export function cpuUse(start: CpuSample, end: CpuSample, vms: number): Record<string, CpuUse> {
  const seconds = Object.entries(end).map(
    ([role, s]) => [role, Math.max(0, s - (start[role] ?? 0))] as const,
  );
  const total = seconds.reduce((sum, [, s]) => sum + s, 0);
  return Object.fromEntries(
    seconds.map(([role, s]) => [
      role,
      { seconds: s, msPerVm: (s * 1000) / vms, share: total ? s / total : 0 },
    ]),
  );
}

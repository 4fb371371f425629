import { describe, expect, it } from "vitest";
import { cpuSeconds, cpuUse, parseProcStat } from "./cpu.ts";

describe("CPU seconds from /proc", () => {
  it("reads utime and stime, fields 14 and 15", () => {
    const line =
      "14706 (cat) R 14703 14703 11024 0 -1 4194304 101 0 0 0 250 37 4 5 20 0 1 0 38880 3133440 381 18446744073709551615";
    expect(parseProcStat(line)).toEqual({ userTicks: 250, systemTicks: 37 });
  });

  it("counts fields after the last parenthesis: a command name may hold spaces and parentheses", () => {
    const line = "7 (node (fleet) 2) S 1 7 7 0 -1 0 0 0 0 0 1200 300 0 0 20 0 11 0 1 1 1";
    expect(parseProcStat(line)).toEqual({ userTicks: 1200, systemTicks: 300 });
  });

  it("refuses what is not a stat line", () => {
    expect(() => parseProcStat("no parenthesis here")).toThrow(/not a \/proc/);
    expect(() => parseProcStat("1 (x) R 1 2")).toThrow(/without utime/);
  });

  it("reads this process, and nothing for a process that is gone", () => {
    expect(cpuSeconds(process.pid)).toBeGreaterThan(0);
    expect(cpuSeconds(2 ** 22 + 1)).toBeUndefined();
  });

  it("reports each role's seconds per VM and its share of the total", () => {
    const use = cpuUse({ apiserver: 10, etcd: 2 }, { apiserver: 16, etcd: 4, agents: 2 }, 100);
    expect(use.apiserver).toEqual({ seconds: 6, msPerVm: 60, share: 0.6 });
    expect(use.etcd?.share).toBeCloseTo(0.2);
    expect(use.agents).toEqual({ seconds: 2, msPerVm: 20, share: 0.2 });
  });
});

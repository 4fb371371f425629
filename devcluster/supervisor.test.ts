import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { describeComponent } from "./supervision-status.ts";
import {
  type BackoffPolicy,
  type ComponentStatus,
  DEFAULT_BACKOFF,
  initialStatus,
  nextRestart,
  readJsonFile,
  writeJsonAtomically,
} from "./supervisor.ts";

describe("nextRestart: exponential backoff", () => {
  const policy: BackoffPolicy = DEFAULT_BACKOFF;
  it.each([
    // consecutive failures so far, uptime of the run that just ended, expected delay, failures after
    [0, 100, 1_000, 1],
    [1, 100, 2_000, 2],
    [2, 100, 4_000, 3],
    [4, 100, 16_000, 5],
    [5, 100, 30_000, 6], // 32 s capped at 30 s
    [40, 100, 30_000, 41], // no overflow however long it crash-loops
    [7, 59_999, 30_000, 8], // not quite stable: still backing off
    [7, 60_000, 1_000, 1], // stayed up 60 s: healthy again, starts over at 1 s
  ])("after %i failures and %i ms up: waits %i ms", (failures, uptimeMs, delayMs, after) => {
    expect(nextRestart(failures, uptimeMs, policy)).toEqual({ delayMs, consecutiveFailures: after });
  });

  it("grows strictly until the cap while a component keeps crashing", () => {
    const delays: number[] = [];
    let failures = 0;
    for (let i = 0; i < 8; i++) {
      const next = nextRestart(failures, 10, policy);
      failures = next.consecutiveFailures;
      delays.push(next.delayMs);
    }
    expect(delays).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
  });
});

describe("the state file", () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("is replaced whole, leaving no temporary file behind", () => {
    dir = mkdtempSync(join(tmpdir(), "stratus-supervisor-unit-"));
    const path = join(dir, "state.json");
    writeFileSync(path, "{ half a fi");
    const state = { supervisorPid: 7, components: { operator: { ...initialStatus(), restarts: 2 } } };
    writeJsonAtomically(path, state);
    expect(readJsonFile(path)).toEqual(state);
    expect(readdirSync(dir)).toEqual(["state.json"]);
    expect(readFileSync(path, "utf8").endsWith("}\n")).toBe(true);
  });

  it("is absent (undefined) or damaged (a message naming the file)", () => {
    dir = mkdtempSync(join(tmpdir(), "stratus-supervisor-unit-"));
    expect(readJsonFile(join(dir, "missing.json"))).toBeUndefined();
    writeFileSync(join(dir, "bad.json"), "{");
    expect(() => readJsonFile(join(dir as string, "bad.json"))).toThrow(/bad\.json is damaged/);
  });
});

describe("describeComponent", () => {
  const now = Date.parse("2026-01-01T12:00:00Z");
  const status = (overrides: Partial<ComponentStatus>): ComponentStatus => ({
    ...initialStatus(),
    ...overrides,
  });
  it.each([
    [
      status({ state: "running", pid: 42, lastStartAt: "2026-01-01T11:56:55Z" }),
      "running (pid 42, up 3m 5s, 0 restarts)",
    ],
    [
      status({
        state: "running",
        pid: 43,
        restarts: 1,
        lastStartAt: "2026-01-01T11:59:58Z",
        lastExit: { code: null, signal: "SIGKILL", at: "2026-01-01T11:59:57Z" },
      }),
      "running (pid 43, up 2s, 1 restart, last exit: signal SIGKILL, 3s ago)",
    ],
    [
      status({
        state: "backing-off",
        restarts: 5,
        nextStartAt: "2026-01-01T12:00:16Z",
        lastExit: { code: 1, signal: null, at: "2026-01-01T11:59:59Z" },
      }),
      "backing-off (next start in 16s, 5 restarts, last exit: code 1, 1s ago)",
    ],
    [
      status({ restarts: 2, lastExit: { code: null, signal: null, at: "2026-01-01T10:00:00Z" } }),
      "stopped (2 restarts, last exit: status unknown, 2h 0m ago)",
    ],
  ])("%o reads %s", (component, expected) => {
    expect(describeComponent(component, now)).toBe(expected);
  });
});

import { describe, expect, it } from "vitest";
import { type FenceState, fenceDeadline, watchdogStep } from "./fence-state.ts";

const state = (overrides: Partial<FenceState> = {}): FenceState => ({
  pid: 4242,
  host: "h1",
  cluster: "c1",
  libvirtUri: "qemu:///system",
  deadline: 10_000,
  haDomains: ["u1"],
  ...overrides,
});

describe("fenceDeadline", () => {
  it("falls a quarter of the Lease before it expires, and at least a second before", () => {
    expect(fenceDeadline(1_000, 20_000)).toBe(16_000);
    expect(fenceDeadline(1_000, 2_000)).toBe(2_000);
  });
});

describe("watchdogStep", () => {
  it("waits while the deadline is ahead, however long the agent has been silent", () => {
    expect(watchdogStep(state(), 9_999, false, undefined)).toEqual({ kind: "wait" });
  });

  it("powers off the HA guests once the deadline passed, without killing a real host's agent", () => {
    expect(watchdogStep(state(), 10_000, true, undefined)).toEqual({
      kind: "fence",
      killAgent: false,
      domains: ["u1"],
    });
  });

  it("keeps fencing while the deadline stays past and the agent lives (a start may have raced)", () => {
    expect(watchdogStep(state(), 12_000, true, 10_000).kind).toBe("fence");
  });

  it("kills a simulated host's agent, whose guests live inside it, only when it has HA guests", () => {
    const simulated = state({ libvirtUri: "test:///default" });
    expect(watchdogStep(simulated, 10_000, true, undefined)).toMatchObject({
      kind: "fence",
      killAgent: true,
    });
    expect(watchdogStep({ ...simulated, haDomains: [] }, 10_000, true, undefined)).toMatchObject({
      kind: "fence",
      killAgent: false,
    });
  });

  it("exits once the agent is gone and its guests were fenced, or when there is no state", () => {
    expect(watchdogStep(state(), 12_000, false, 10_000)).toEqual({ kind: "exit" });
    expect(watchdogStep(state(), 12_000, false, undefined).kind).toBe("fence");
    expect(watchdogStep(undefined, 12_000, true, undefined)).toEqual({ kind: "exit" });
  });

  it("follows a new deadline written by a renewal (or a restarted agent)", () => {
    expect(watchdogStep(state({ deadline: 20_000, pid: 5151 }), 12_000, true, 10_000)).toEqual({
      kind: "wait",
    });
  });
});

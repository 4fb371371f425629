import { describe, expect, it } from "vitest";
import { type DisplayStateOptions, displayState, type VirtualMachineState } from "./display-state.ts";
import type { VirtualMachine } from "./index.ts";

const vm = (
  spec: Partial<VirtualMachine["spec"]> = {},
  status?: VirtualMachine["status"],
  deleting = false,
): VirtualMachine => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "VirtualMachine",
  metadata: {
    name: "web",
    namespace: "a",
    ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}),
  },
  spec: { zone: "z", serviceOffering: "s", template: "t", ...spec },
  ...(status ? { status } : {}),
});
const hostLost = {
  type: "HostReady",
  status: "False" as const,
  reason: "HostNotReady",
  message: "",
  lastTransitionTime: "",
};

describe("displayState", () => {
  const cases: [string, VirtualMachine, DisplayStateOptions, VirtualMachineState][] = [
    ["new VM", vm(), {}, "Pending"],
    [
      "a CloudStack deploy that found no host",
      {
        ...vm({ runStrategy: "Halted" }),
        metadata: { name: "web", annotations: { "stratus.io/deploy-failed": "" } },
      },
      {},
      "Error",
    ],
    ["unplaced and Halted", vm({ runStrategy: "Halted" }), {}, "Stopped"],
    ["placed, no agent report yet", vm({}, { host: "h1" }), {}, "Starting"],
    ["the agent's state", vm({}, { host: "h1", state: "Running" }), {}, "Running"],
    [
      "a host the caller knows is lost",
      vm({}, { host: "h1", state: "Running" }),
      { hostReady: false },
      "Unknown",
    ],
    [
      "HostReady False from fabric",
      vm({}, { host: "h1", state: "Running", conditions: [hostLost] }),
      {},
      "Unknown",
    ],
    ["a Ready host", vm({}, { host: "h1", state: "Stopped" }), { hostReady: true }, "Stopped"],
    ["being deleted", vm({}, { host: "h1", state: "Running" }, true), {}, "Destroyed"],
    [
      "placed on a new host after a failover, before the restart is seen",
      vm({}, { host: "h2", state: "Running", failover: { from: "h1", lostAt: "t", releasedAt: "t" } }),
      {},
      "Starting",
    ],
    [
      "restarted after a failover",
      vm(
        {},
        {
          host: "h2",
          state: "Running",
          failover: { from: "h1", lostAt: "t", releasedAt: "t", restartedOn: "h2" },
        },
      ),
      {},
      "Running",
    ],
    [
      "placed and Halted, before the agent reports",
      vm({ runStrategy: "Halted" }, { host: "h1" }),
      {},
      "Stopped",
    ],
  ];
  it.each(cases)("%s", (_, machine, options, expected) => {
    expect(displayState(machine, options)).toBe(expected);
  });
});

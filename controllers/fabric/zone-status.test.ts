import { describe, expect, it } from "vitest";
import type { Host, Zone } from "../../crds/index.ts";
import { desiredZoneStatus, isHostSchedulable } from "./zone-status.ts";

const NOW = new Date("2026-11-25T10:00:00Z");
const zone = (spec: Partial<Zone["spec"]> = {}, status?: Zone["status"]): Zone => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Zone",
  metadata: { name: "z1", generation: 3 },
  spec: { allocationState: "Enabled", ...spec },
  ...(status ? { status } : {}),
});

function host(
  name: string,
  options: {
    ready?: boolean;
    cpu?: number;
    memory?: string;
    allocatedCpu?: number;
    allocatedMemory?: string;
    spec?: Partial<Host["spec"]>;
    resourceState?: string;
  } = {},
): Host {
  const { ready = true, cpu = 8, memory = "16Gi", allocatedCpu = 0, allocatedMemory = "0" } = options;
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Host",
    metadata: { name },
    spec: { zone: "z1", ...options.spec },
    status: {
      capacity: { cpu, memory },
      allocated: { cpu: allocatedCpu, memory: allocatedMemory, virtualMachines: 0 },
      conditions: [
        {
          type: "Ready",
          status: ready ? "True" : "False",
          reason: "R",
          message: "",
          lastTransitionTime: "2026-11-25T09:00:00Z",
        },
      ],
      ...(options.resourceState ? { resourceState: options.resourceState as never } : {}),
    },
  };
}

describe("zone status", () => {
  it("counts hosts and sums the capacity of ready hosts and every host's allocation", () => {
    const status = desiredZoneStatus(
      zone(),
      [
        host("a", { allocatedCpu: 2, allocatedMemory: "4Gi" }),
        host("b", { cpu: 4, memory: "8Gi" }),
        host("c", { ready: false, allocatedCpu: 1, allocatedMemory: "1Gi" }),
      ],
      NOW,
    );
    expect(status).toMatchObject({
      observedGeneration: 3,
      hosts: { total: 3, ready: 2, schedulable: 2 },
      capacity: { cpu: 12, memory: "24Gi" },
      allocated: { cpu: 3, memory: "5Gi" },
    });
    expect(status.conditions).toEqual([
      {
        type: "Ready",
        status: "True",
        reason: "HostsAvailable",
        message: "2 of 3 hosts accept VMs.",
        observedGeneration: 3,
        lastTransitionTime: "2026-11-25T10:00:00Z",
      },
    ]);
  });

  it("is not Ready without a schedulable host, and says why", () => {
    const status = desiredZoneStatus(
      zone(),
      [host("a", { spec: { maintenance: true } }), host("b", { ready: false })],
      NOW,
    );
    expect(status.hosts).toEqual({ total: 2, ready: 1, schedulable: 0 });
    expect(status.conditions?.[0]).toMatchObject({
      status: "False",
      reason: "NoSchedulableHosts",
      message: "None of the zone's 2 hosts accepts VMs (1 ready).",
    });
  });

  it("is not Ready when disabled", () => {
    const status = desiredZoneStatus(zone({ allocationState: "Disabled" }), [host("a")], NOW);
    expect(status.conditions?.[0]).toMatchObject({ status: "False", reason: "Disabled" });
  });

  it("keeps the transition time while the condition holds", () => {
    const first = desiredZoneStatus(zone(), [host("a")], NOW);
    const later = desiredZoneStatus(
      zone({}, first),
      [host("a"), host("b")],
      new Date("2026-11-25T11:00:00Z"),
    );
    expect(later.conditions?.[0]?.lastTransitionTime).toBe("2026-11-25T10:00:00Z");
    expect(later.conditions?.[0]?.message).toBe("2 of 2 hosts accept VMs.");
  });

  it.each([
    ["ready and enabled", host("a"), true],
    ["not ready", host("a", { ready: false }), false],
    ["disabled", host("a", { spec: { allocationState: "Disabled" } }), false],
    ["in maintenance", host("a", { spec: { maintenance: true } }), false],
    ["preparing for maintenance", host("a", { resourceState: "PrepareForMaintenance" }), false],
  ])("a host %s is schedulable: %s", (_, h, expected) => {
    expect(isHostSchedulable(h)).toBe(expected);
  });
});

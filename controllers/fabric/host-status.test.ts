import { describe, expect, it } from "vitest";
import type { Host, VirtualMachine } from "../../crds/index.ts";
import type { Lease } from "../../runtime/leader-election.ts";
import { statusSays } from "../../runtime/objects.ts";
import { desiredHostStatus, strandedBy } from "./host-status.ts";

const NOW = new Date("2026-11-25T10:00:00Z");
const OPTIONS = { graceMs: 10_000, leaseName: "stratus-system/host-h1" };
const idle = { cpu: 0, memoryBytes: 0n, virtualMachines: 0 };

const host = (spec: Partial<Host["spec"]> = {}): Host => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Host",
  metadata: { name: "h1", generation: 2 },
  spec: { zone: "z1", ...spec },
});

const lease = (secondsAgo: number): Lease => ({
  metadata: { name: "host-h1", namespace: "stratus-system" },
  spec: {
    holderIdentity: "h1",
    leaseDurationSeconds: 20,
    renewTime: new Date(NOW.getTime() - secondsAgo * 1000).toISOString().replace("Z", "000Z"),
  },
});

const condition = (status: Record<string, unknown>, type: string) =>
  (status.conditions as { type: string; status: string; reason: string }[]).find((c) => c.type === type);

describe("desiredHostStatus", () => {
  it("is Ready while the Lease is within its duration plus grace, and says when to look again", () => {
    const { status, recheckAfterMs } = desiredHostStatus(host(), lease(5), idle, OPTIONS, NOW);
    expect(condition(status, "Ready")).toMatchObject({ status: "True", reason: "HeartbeatCurrent" });
    expect(condition(status, "Schedulable")).toMatchObject({ status: "True" });
    expect(status.resourceState).toBe("Enabled");
    expect(recheckAfterMs).toBe(25_000); // 20 s duration + 10 s grace - 5 s since renewal
  });

  it("is NotReady once the Lease has expired past the grace, or when there is none", () => {
    expect(condition(desiredHostStatus(host(), lease(31), idle, OPTIONS, NOW).status, "Ready")).toMatchObject(
      {
        status: "False",
        reason: "HeartbeatExpired",
      },
    );
    expect(condition(desiredHostStatus(host(), undefined, idle, OPTIONS, NOW).status, "Ready")).toMatchObject(
      {
        status: "False",
        reason: "NoHeartbeat",
      },
    );
    expect(desiredHostStatus(host(), lease(31), idle, OPTIONS, NOW).recheckAfterMs).toBeUndefined();
  });

  it("asks for no write when only the Lease was renewed", () => {
    const first = desiredHostStatus(host(), lease(5), idle, OPTIONS, NOW).status;
    const written = { ...host(), status: first as NonNullable<Host["status"]> };
    const later = new Date(NOW.getTime() + 8_000);
    const renewed = {
      ...lease(0),
      spec: { ...lease(0).spec, renewTime: later.toISOString().replace("Z", "000Z") },
    };
    const { status } = desiredHostStatus(written, renewed, idle, OPTIONS, later);
    expect(statusSays(status, first)).toBe(true);
  });

  it("walks maintenance: PrepareForMaintenance while VMs remain, then Maintenance; ErrorInMaintenance when the host is down", () => {
    const busy = { cpu: 2, memoryBytes: 2n * 1024n ** 3n, virtualMachines: 1 };
    const preparing = desiredHostStatus(host({ maintenance: true }), lease(1), busy, OPTIONS, NOW).status;
    expect(preparing.resourceState).toBe("PrepareForMaintenance");
    expect(preparing.allocated).toEqual({ cpu: 2, memory: "2Gi", virtualMachines: 1 });
    expect(condition(preparing, "Schedulable")).toMatchObject({
      status: "False",
      reason: "PrepareForMaintenance",
    });
    expect(
      desiredHostStatus(host({ maintenance: true }), lease(1), idle, OPTIONS, NOW).status.resourceState,
    ).toBe("Maintenance");
    expect(
      desiredHostStatus(host({ maintenance: true }), lease(60), busy, OPTIONS, NOW).status.resourceState,
    ).toBe("ErrorInMaintenance");
    expect(
      desiredHostStatus(host({ allocationState: "Disabled" }), lease(1), idle, OPTIONS, NOW).status
        .resourceState,
    ).toBe("Disabled");
    const degraded = desiredHostStatus(host({ degraded: true }), lease(60), idle, OPTIONS, NOW).status;
    expect(degraded.resourceState).toBe("Degraded");
    expect(condition(degraded, "Schedulable")).toMatchObject({ status: "False" });
  });
});

describe("a VM that maintenance cannot move", () => {
  const evacuated = (reason: string, from = "h1"): VirtualMachine => ({
    apiVersion: "stratus.io/v1alpha1",
    kind: "VirtualMachine",
    metadata: { name: "web", namespace: "a" },
    spec: { zone: "z1", serviceOffering: "small", template: "tiny" },
    status: {
      host: "h1",
      evacuatedFrom: from,
      conditions: [
        {
          type: "Scheduled",
          status: "False",
          reason,
          message:
            "0/1 hosts: 1 volume web-root cannot move from pool local-h1: pool local-h2 has too little room",
          lastTransitionTime: "2026-11-25T09:00:00Z",
        },
      ],
    },
  });

  it("is stranded only while evacuated from the host and Unschedulable", () => {
    expect(strandedBy("h1", evacuated("Unschedulable"))).toEqual({
      vm: "a/web",
      message:
        "0/1 hosts: 1 volume web-root cannot move from pool local-h1: pool local-h2 has too little room",
    });
    expect(strandedBy("h1", evacuated("WaitingForResources"))).toBeUndefined();
    expect(strandedBy("h1", evacuated("Unschedulable", "h0"))).toBeUndefined();
  });

  it("puts the host in ErrorInMaintenance, naming the VM and why", () => {
    const stranded = [strandedBy("h1", evacuated("Unschedulable")) as { vm: string; message: string }];
    const busy = { cpu: 2, memoryBytes: 0n, virtualMachines: 2, stranded };
    const { status } = desiredHostStatus(host({ maintenance: true }), lease(1), busy, OPTIONS, NOW);
    expect(status.resourceState).toBe("ErrorInMaintenance");
    expect(condition(status, "Schedulable")).toMatchObject({
      status: "False",
      reason: "ErrorInMaintenance",
      message:
        "1 of 2 VM(s) cannot move off the host: VM a/web: 0/1 hosts: 1 volume web-root cannot move from pool local-h1: pool local-h2 has too little room",
    });
    const moving = { ...busy, stranded: [] };
    expect(
      desiredHostStatus(host({ maintenance: true }), lease(1), moving, OPTIONS, NOW).status.resourceState,
    ).toBe("PrepareForMaintenance");
  });
});

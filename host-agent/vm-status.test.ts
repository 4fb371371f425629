import { describe, expect, it } from "vitest";
import type { VirtualMachine } from "../crds/index.ts";
import type { DomainInfo } from "./libvirt/connection.ts";
import { desiredVmStatus, runIntent } from "./vm-status.ts";

const vm = (
  runStrategy: NonNullable<VirtualMachine["spec"]["runStrategy"]>,
  readyGeneration?: number,
): VirtualMachine => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name: "web", namespace: "team-a", uid: "u1", generation: 3 },
  spec: { zone: "z1", serviceOffering: "small", template: "tiny", runStrategy },
  ...(readyGeneration === undefined
    ? {}
    : {
        status: {
          conditions: [
            {
              type: "Ready",
              status: "True",
              reason: "Running",
              message: "",
              observedGeneration: readyGeneration,
              lastTransitionTime: "2026-11-25T00:00:00Z",
            },
          ],
        },
      }),
});
const off = (shutoffReason: DomainInfo["shutoffReason"]): DomainInfo => ({
  name: "stratus-u1",
  uuid: "u1",
  state: "shutoff",
  ...(shutoffReason ? { shutoffReason } : {}),
});

describe("runIntent", () => {
  it("keeps Always running and Halted stopped; Manual is left alone", () => {
    expect(runIntent(vm("Always"), off("shutdown"))).toBe("run");
    expect(runIntent(vm("Halted"))).toBe("stop");
    expect(runIntent(vm("Manual"))).toBe("leave");
  });

  it("RerunOnFailure restarts a failure but not a guest that powered itself off at this generation", () => {
    expect(runIntent(vm("RerunOnFailure", 3), off("crashed"))).toBe("run");
    expect(runIntent(vm("RerunOnFailure", 3), off("destroyed"))).toBe("run");
    expect(runIntent(vm("RerunOnFailure", 3), off("shutdown"))).toBe("leave");
    // A spec change since (e.g. back from Halted) starts it again.
    expect(runIntent(vm("RerunOnFailure", 2), off("shutdown"))).toBe("run");
    expect(runIntent(vm("RerunOnFailure"), undefined)).toBe("run");
  });
});

describe("desiredVmStatus", () => {
  it("reports a guest shutdown under RerunOnFailure as settled, with the reason", () => {
    const status = desiredVmStatus(vm("RerunOnFailure", 3), "h1", off("shutdown"));
    expect(status.state).toBe("Stopped");
    expect(status.conditions).toEqual([
      expect.objectContaining({
        type: "Ready",
        status: "True",
        reason: "GuestShutdown",
        observedGeneration: 3,
      }),
    ]);
  });

  it("says Stopping while a guest asked to stop still runs, and owns only the Ready condition", () => {
    const status = desiredVmStatus(vm("Halted", 3), "h1", {
      uuid: "u1",
      state: "running",
    });
    expect(status.state).toBe("Stopping");
    expect(status.conditions.map((c) => c.type)).toEqual(["Ready"]);
    expect(status.conditions[0]).toMatchObject({ status: "False", reason: "Converging" });
  });
});

describe("a stopped VM with no domain", () => {
  it("is Stopped and Ready, not Pending", () => {
    const status = desiredVmStatus(vm("Halted"), "h1", undefined);
    expect(status.state).toBe("Stopped");
    expect(status.conditions[0]).toMatchObject({ status: "True", reason: "Stopped" });
  });
});

describe("a guest paused for a snapshot's copy", () => {
  it("is still Running and Ready: the pause lasts a moment and the guest goes on", () => {
    const status = desiredVmStatus(vm("Always"), "h1", { state: "paused", uuid: "u" });
    expect(status.state).toBe("Running");
    expect(status.conditions[0]).toMatchObject({ status: "True", reason: "Running" });
  });
});

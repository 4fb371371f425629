import { describe, expect, it } from "vitest";
import type { VirtualMachine, VirtualMachineMigration } from "../../crds/index.ts";
import { evacuationStep } from "./maintenance-migrations.ts";
import { decideMigration, judgeTargets, type MigrationInput, migratedTo } from "./migration-decision.ts";
import { disk, free, host, NOW, POOLS, SHARED, usage } from "./orchestration.fixtures.ts";

const migratable = (h: ReturnType<typeof host>) => {
  h.status = {
    ...h.status,
    hypervisor: { type: "QEMU", version: "9", libvirtVersion: "9", uri: "qemu:///system" },
    migrationUri: `qemu+tcp://${h.metadata.name}/system`,
  };
  return h;
};
const runningVm = (state = "Running", on = "h1"): VirtualMachine =>
  ({
    metadata: { name: "web", namespace: "team-a", uid: "u1" },
    spec: { zone: "z1", serviceOffering: "small", template: "tiny" },
    status: { host: on, state },
  }) as VirtualMachine;
const migration = (
  status: VirtualMachineMigration["status"] = {},
  extra: Partial<VirtualMachineMigration["metadata"]> = {},
  targetHost?: string,
): VirtualMachineMigration => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "VirtualMachineMigration",
  metadata: { name: "m1", namespace: "team-a", finalizers: ["stratus.io/migration"], ...extra },
  spec: { vm: "web", ...(targetHost ? { targetHost } : {}) },
  status,
});
const pools = [...POOLS, SHARED];
function input(overrides: Partial<MigrationInput> = {}): MigrationInput {
  return {
    migration: migration(),
    vm: runningVm(),
    demand: { zone: "z1", cpu: 1, memoryBytes: 1024n ** 3n, hostTags: [] },
    storage: {
      volumes: [disk("web-root", 1n, "shared")],
      pools: free(pools)(),
      poolsByName: new Map(pools.map((p) => [p.metadata.name as string, p])),
    },
    hosts: ["h1", "h2", "h3"].map((name) => usage(migratable(host(name)))),
    activeOn: () => 0,
    maxPerHost: 2,
    now: NOW,
    ...overrides,
  };
}
const phaseOf = (i: MigrationInput) => {
  const d = decideMigration(i);
  return {
    phase: d.status.phase,
    reason: d.status.reason,
    target: d.status.targetHost,
    finalizer: d.finalizer,
  };
};

describe("decideMigration before a target is chosen", () => {
  it("chooses the first suitable other host and records source and target", () => {
    expect(phaseOf(input())).toEqual({
      phase: "Scheduling",
      reason: "TargetChosen",
      target: "h2",
      finalizer: undefined,
    });
  });
  it("adds its finalizer before it admits anything", () => {
    expect(phaseOf(input({ migration: migration({}, { finalizers: [] }) })).finalizer).toBe("add");
  });
  it.each([
    ["a stopped VM", { vm: runningVm("Stopped") }, "VMNotRunning"],
    ["a VM that is gone", { vm: undefined }, "VMNotFound"],
    [
      "a volume in a local pool",
      { storage: { ...input().storage, volumes: [disk("web-root", 1n, "local-h1")] } },
      "VolumeOnLocalStorage",
    ],
    ["a second migration of the VM", { otherActive: "m0" }, "AlreadyMigrating"],
    ["a target that is the source", { migration: migration({}, {}, "h1") }, "SameHost"],
    ["a target that is not a host", { migration: migration({}, {}, "nope") }, "HostNotFound"],
  ] as const)("fails %s with reason %s", (_, overrides, reason) => {
    const d = phaseOf(input(overrides as Partial<MigrationInput>));
    expect(d).toMatchObject({ phase: "Failed", reason, finalizer: "remove" });
  });
  it("says why each host cannot take the VM: simulated, no migration URI, not ready, full", () => {
    const simulated = host("h2");
    simulated.status = {
      ...simulated.status,
      hypervisor: { type: "Simulator", version: "", libvirtVersion: "", uri: "test:///default" },
      migrationUri: "test:///default",
    };
    const verdicts = judgeTargets(
      input({
        hosts: [
          usage(migratable(host("h1"))),
          usage(simulated),
          usage(host("h3")),
          usage(migratable(host("h4", false))),
          usage(migratable(host("h5")), 4),
        ],
      }),
      "h1",
    );
    expect(verdicts).toEqual([
      { host: "h2", suitable: false, reason: "simulated (libvirt's test driver cannot migrate)" },
      { host: "h3", suitable: false, reason: "its agent takes no migrations (no status.migrationUri)" },
      { host: "h4", suitable: false, reason: "not ready" },
      { host: "h5", suitable: false, reason: "insufficient CPU" },
    ]);
    expect(
      phaseOf(input({ hosts: verdicts.length ? [usage(migratable(host("h1"))), usage(simulated)] : [] })),
    ).toMatchObject({ phase: "Failed", reason: "NoSuitableHost" });
  });
  it("keeps at most N migrations per host: a busy source or named target waits, a busy host is skipped", () => {
    const busy = (hosts: string[]) => (h: string) => (hosts.includes(h) ? 2 : 0);
    expect(phaseOf(input({ activeOn: busy(["h1"]) }))).toMatchObject({
      phase: "Pending",
      reason: "WaitingForSlot",
    });
    expect(phaseOf(input({ activeOn: busy(["h2"]) }))).toMatchObject({ phase: "Scheduling", target: "h3" });
    expect(phaseOf(input({ activeOn: busy(["h2"]), migration: migration({}, {}, "h2") }))).toMatchObject({
      phase: "Pending",
    });
  });
  it("a migration deleted before it was admitted is Cancelled and lets go", () => {
    expect(
      phaseOf(input({ migration: migration({}, { deletionTimestamp: NOW.toISOString() }) })),
    ).toMatchObject({ phase: "Cancelled", finalizer: "remove" });
  });
});

describe("decideMigration after the admission follows the source agent's report", () => {
  const admitted = (transfer?: NonNullable<VirtualMachineMigration["status"]>["transfer"], extra = {}) =>
    migration(
      { phase: "Scheduling", sourceHost: "h1", targetHost: "h2", ...(transfer ? { transfer } : {}) },
      extra,
    );
  it.each([
    ["no report", undefined, "h1", "Scheduling", undefined],
    ["Running", { state: "Running" as const }, "h1", "Running", undefined],
    ["Completed, VM still bound to the source", { state: "Completed" as const }, "h1", "Running", undefined],
    ["Completed, VM bound to the target", { state: "Completed" as const }, "h2", "Succeeded", "remove"],
    ["Failed", { state: "Failed" as const, message: "libvirt: boom" }, "h1", "Failed", "remove"],
    ["Cancelled", { state: "Cancelled" as const }, "h1", "Cancelled", "remove"],
  ])("%s", (_, transfer, on, phase, finalizer) => {
    expect(phaseOf(input({ migration: admitted(transfer), vm: runningVm("Running", on) }))).toMatchObject({
      phase,
      finalizer,
    });
  });
  it("a deletion after the admission waits for the agent's word (the transfer may be under way)", () => {
    const d = phaseOf(input({ migration: admitted(undefined, { deletionTimestamp: NOW.toISOString() }) }));
    expect(d).toMatchObject({ phase: "Scheduling", finalizer: undefined });
  });
  it("compute binds the VM to the target of a completed transfer from its current host only", () => {
    const vm = runningVm();
    expect(migratedTo(vm, [admitted({ state: "Completed" })])).toBe("h2");
    expect(migratedTo(vm, [admitted({ state: "Running" })])).toBeUndefined();
    expect(migratedTo(runningVm("Running", "h3"), [admitted({ state: "Completed" })])).toBeUndefined();
    // A migration that Succeeded is history: the VM came back since and stays where it is.
    const over = admitted({ state: "Completed" });
    over.status = { ...over.status, phase: "Succeeded" };
    expect(migratedTo(vm, [over])).toBeUndefined();
  });
});

describe("evacuationStep: maintenance's live moves", () => {
  const step = (vm: VirtualMachine, existing?: VirtualMachineMigration, otherActive = false, live = true) =>
    evacuationStep(vm, existing, otherActive, live);
  it.each([
    ["a running VM on shared storage gets one", runningVm(), undefined, false, true, "create"],
    ["a stopped VM is evacuated the old way", runningVm("Stopped"), undefined, false, true, "none"],
    ["a VM with a local disk is evacuated the old way", runningVm(), undefined, false, false, "none"],
    [
      "one already under way is left to run",
      runningVm(),
      migration({ phase: "Running" }),
      false,
      true,
      "none",
    ],
    [
      "a failed one stays (the agent falls back)",
      runningVm(),
      migration({ phase: "Failed" }),
      false,
      true,
      "none",
    ],
    ["another migration of the VM comes first", runningVm(), undefined, true, true, "none"],
    [
      "a success of an earlier maintenance is stale",
      runningVm(),
      migration({ phase: "Succeeded" }),
      false,
      true,
      "delete-stale",
    ],
  ] as const)("%s", (_, vm, existing, otherActive, live, expected) => {
    expect(step(vm, existing, otherActive, live)).toBe(expected);
  });
});

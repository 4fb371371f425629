// Where the VM's disks can live decides where it runs: pinning to a local pool, room in the pools,
// and VolumesReady False while a disk is copied to the pool of the VM's new host.
import { describe, expect, it } from "vitest";
import {
  dataVolume,
  disk,
  free,
  input,
  newRoot,
  POOLS,
  SHARED,
  summary,
  vm,
} from "./orchestration.fixtures.ts";
import { decideOrchestration, type OrchestrationInput, UNSCHEDULABLE_RETRY_MS } from "./orchestration.ts";

describe("decideOrchestration with storage", () => {
  const cases: [string, Partial<OrchestrationInput>, ReturnType<typeof summary>][] = [
    [
      "a data volume in a host's local pool keeps the VM there, even on the busier host",
      {
        vm: vm({ dataVolumes: [{ name: "d", volume: "data" }] }),
        dataVolumes: new Map([["data", dataVolume("h1")]]),
        volumeNeeds: [...newRoot, disk("data", 1n, "local-h1")],
      },
      {
        host: "h1",
        placed: "h1",
        scheduled: "True/Placed",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "a data volume in a shared pool does not pin the VM",
      {
        vm: vm({ dataVolumes: [{ name: "d", volume: "data" }] }),
        dataVolumes: new Map([["data", dataVolume("h1")]]),
        volumeNeeds: [...newRoot, disk("data", 1n, "shared")],
        pools: [...POOLS, SHARED],
        poolUsages: free([...POOLS, SHARED]),
      },
      {
        host: "h2",
        placed: "h2",
        scheduled: "True/Placed",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "no pool has room for the root disk: Unschedulable",
      { poolUsages: free(POOLS, 15n) },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/Unschedulable",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: UNSCHEDULABLE_RETRY_MS,
      },
    ],
    [
      "evacuated with a disk in its old host's pool: placed where the disk can go, volumes moving",
      { vm: vm({}, { host: "h2", evacuatedFrom: "h2" }), volumeNeeds: [disk("web-root", 10n, "local-h2")] },
      {
        host: "h1",
        placed: "h1",
        scheduled: "True/Placed",
        volumes: "False/VolumesMoving",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "evacuated with no pool to take its disk: keeps its host and says why",
      {
        vm: vm({}, { host: "h2", evacuatedFrom: "h2" }),
        volumeNeeds: [disk("web-root", 10n, "local-h2")],
        poolUsages: free(POOLS, 15n),
      },
      {
        host: "h2",
        placed: undefined,
        scheduled: "False/Unschedulable",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: UNSCHEDULABLE_RETRY_MS,
      },
    ],
    [
      "placed on a host while its disk is still copied in: VolumesMoving",
      { vm: vm({}, { host: "h1" }), volumeNeeds: [disk("web-root", 10n, "local-h2")] },
      {
        host: "h1",
        placed: undefined,
        scheduled: "True/Placed",
        volumes: "False/VolumesMoving",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "the disk arrived in the new host's pool: volumes ready",
      { vm: vm({}, { host: "h1" }), volumeNeeds: [disk("web-root", 10n, "local-h1")] },
      {
        host: "h1",
        placed: undefined,
        scheduled: "True/Placed",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
  ];
  it.each(cases)("%s", (_, overrides, expected) => {
    expect(summary(decideOrchestration(input(overrides)))).toEqual(expected);
  });

  it("says which disk moves where, and why no host can take an evacuated VM's disk", () => {
    const moving = decideOrchestration(
      input({
        vm: vm({}, { host: "h1" }),
        volumeNeeds: [disk("web-root", 10n, "local-h2")],
        moveTargets: new Map([["web-root", "local-h1"]]),
      }),
    );
    expect(moving.status?.conditions.find((c) => c.type === "VolumesReady")?.message).toBe(
      "Volume web-root is being copied from pool local-h2 to pool local-h1.",
    );
    // A requested move within reach (migrateVolume): the stopped VM is not started on the old disk meanwhile.
    const requested = decideOrchestration(
      input({
        vm: vm({}, { host: "h1" }),
        volumeNeeds: [disk("web-root", 10n, "local-h1")],
        moveTargets: new Map([["web-root", "fast"]]),
      }),
    );
    expect(requested.status?.conditions.find((c) => c.type === "VolumesReady")).toMatchObject({
      status: "False",
      reason: "VolumesMoving",
      message: "Volume web-root is being copied from pool local-h1 to pool fast.",
    });
    const stuck = decideOrchestration(
      input({
        vm: vm({}, { host: "h2", evacuatedFrom: "h2" }),
        volumeNeeds: [disk("web-root", 10n, "local-h2")],
        poolUsages: free(POOLS, 15n),
      }),
    );
    expect(stuck.status?.conditions.find((c) => c.type === "Scheduled")?.message).toBe(
      "0/1 hosts: 1 volume web-root cannot move from pool local-h2: pool local-h1 has too little room",
    );
  });
});

import { describe, expect, it } from "vitest";
import type { Zone } from "../../crds/index.ts";
import { condition, exhausted, host, input, MAC, summary, usage, vm } from "./orchestration.fixtures.ts";
import { decideOrchestration, type OrchestrationInput, UNSCHEDULABLE_RETRY_MS } from "./orchestration.ts";

/** A VM its volumes keep from being placed: prepared otherwise, and saying why. */
const heldUnplaced = (volumes: string): ReturnType<typeof summary> => ({
  host: undefined,
  placed: undefined,
  scheduled: "False/WaitingForResources",
  volumes,
  networks: "True/AddressesAllocated",
  requeue: undefined,
});

describe("decideOrchestration", () => {
  const cases: [string, Partial<OrchestrationInput>, ReturnType<typeof summary>][] = [
    [
      "a new VM with everything ready is placed on the least allocated host in the same write",
      {},
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
      "no template: nothing is placed, and it says why",
      { template: undefined, rootVolume: "not-needed" },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/WaitingForResources",
        volumes: "False/TemplateNotFound",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "exhausted addresses: not placed",
      { nics: exhausted },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/WaitingForResources",
        volumes: "True/VolumesAvailable",
        networks: "False/AddressesExhausted",
        requeue: undefined,
      },
    ],
    [
      "no host fits: Unschedulable, tried again later",
      { hostUsages: () => [usage(host("h1"), 4), usage(host("h2", false))] },
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
      "an account at its CPU limit: not placed, and it says which limit to raise",
      { accountLimits: { cpu: 4 }, accountUsage: () => ({ cpu: 3, memoryBytes: 0n }) },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/ResourceLimitExceeded",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "an account with room under its CPU and memory limits: placed",
      {
        accountLimits: { cpu: 4, memoryBytes: 2n ** 31n },
        accountUsage: () => ({ cpu: 2, memoryBytes: 2n ** 30n }),
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
      "the account's primary-storage limit holds one of its volumes: it waits, and says so",
      { storageRefusal: "Maximum number of resources of type 'primary_storage' ..." },
      heldUnplaced("False/ResourceLimitExceeded"),
    ],
    [
      "the storage controller has not granted a volume its size yet: it is not placed until it has",
      { storageUndecided: "web-root" },
      heldUnplaced("False/AwaitingStorageAdmission"),
    ],
    [
      "the account's volume limit refused the ROOT volume: it waits, and says so",
      { rootVolume: "over-limit", rootVolumeRefusal: "exceeded quota: stratus-resource-limits" },
      heldUnplaced("False/ResourceLimitExceeded"),
    ],
    [
      "an unplaced Halted VM is prepared but not placed",
      { vm: vm({ runStrategy: "Halted" }) },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/Halted",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "a placed Halted VM keeps its host",
      { vm: vm({ runStrategy: "Halted" }, { host: "h1" }) },
      {
        host: "h1",
        placed: undefined,
        scheduled: "True/Placed",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "a missing data volume: not placed",
      { vm: vm({ dataVolumes: [{ name: "d", volume: "data" }] }) },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/WaitingForResources",
        volumes: "False/VolumeNotFound",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "a root volume name held by someone else",
      { rootVolume: "foreign" },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/WaitingForResources",
        volumes: "False/RootVolumeNameTaken",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "evacuated from its host: placed on another",
      { vm: vm({}, { host: "h2", evacuatedFrom: "h2" }) },
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
      "evacuated from an earlier host only: stays where it is",
      { vm: vm({}, { host: "h1", evacuatedFrom: "h2" }) },
      {
        host: "h1",
        placed: undefined,
        scheduled: "True/Placed",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "evacuated with nowhere to go: keeps its host and says why",
      {
        vm: vm({}, { host: "h2", evacuatedFrom: "h2" }),
        hostUsages: () => [usage(host("h1"), 4), usage(host("h2"))],
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
      "a disabled zone places nothing",
      { zone: { metadata: { name: "z1" }, spec: { allocationState: "Disabled" } } as Zone },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/ZoneDisabled",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
    [
      "an unknown offering places nothing",
      { offering: undefined },
      {
        host: undefined,
        placed: undefined,
        scheduled: "False/ServiceOfferingNotFound",
        volumes: "True/VolumesAvailable",
        networks: "True/AddressesAllocated",
        requeue: undefined,
      },
    ],
  ];
  it.each(cases)("%s", (_, overrides, expected) => {
    expect(summary(decideOrchestration(input(overrides)))).toEqual(expected);
  });

  it("writes nothing while a root volume it could not create is not in the cache yet", () => {
    expect(decideOrchestration(input({ rootVolume: "unconfirmed" }))).toEqual({});
  });

  it("records each NIC with its MAC and address, and keeps unchanged conditions' transition times", () => {
    const placed = vm(
      {},
      {
        host: "h1",
        conditions: [condition("Scheduled", "True", "Placed"), condition("Ready", "True", "Running")],
      },
    );
    const { status } = decideOrchestration(input({ vm: placed }));
    expect(status?.nics).toEqual([{ name: "eth0", network: "net", macAddress: MAC, ipAddress: "10.0.0.2" }]);
    expect(status?.conditions.map((c) => c.type)).toEqual(["NetworksReady", "Scheduled", "VolumesReady"]);
    expect(status?.conditions.find((c) => c.type === "Scheduled")?.lastTransitionTime).toBe(
      "2025-12-01T00:00:00Z",
    );
  });

  it("counts an account's usage only for a VM that takes room for the first time", () => {
    let asked = 0;
    const accountUsage = () => {
      asked++;
      return { cpu: 100, memoryBytes: 0n };
    };
    const placed = decideOrchestration(
      input({ vm: vm({}, { host: "h1" }), accountLimits: { cpu: 1 }, accountUsage }),
    );
    expect(placed.status?.host).toBe("h1");
    expect(asked).toBe(0);
    const refused = decideOrchestration(input({ accountLimits: { cpu: 1 }, accountUsage }));
    expect(refused.status?.conditions.find((c) => c.type === "Scheduled")?.message).toContain(
      "100 of 1 CPUs in use",
    );
  });

  it("computes host usage only when the VM needs a host", () => {
    let asked = 0;
    decideOrchestration(
      input({
        vm: vm({}, { host: "h1" }),
        hostUsages: () => {
          asked++;
          return [];
        },
      }),
    );
    expect(asked).toBe(0);
  });
});

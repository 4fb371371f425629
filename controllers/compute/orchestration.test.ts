import { describe, expect, it } from "vitest";
import type {
  Host,
  ServiceOffering,
  StoragePool,
  Template,
  VirtualMachine,
  Volume,
  Zone,
} from "../../crds/index.ts";
import type { PoolUsage, VolumeNeed } from "../../crds/volume-placement.ts";
import type { Condition } from "../../runtime/conditions.ts";
import type { NicAddressing } from "../network/ipam.ts";
import type { HostUsage } from "../scheduler/placement.ts";
import { decideOrchestration, type OrchestrationInput, UNSCHEDULABLE_RETRY_MS } from "./orchestration.ts";

const UID = "0b8e5c3e-2f6d-4c1a-9a55-6d1f3e2b7c90";
const NOW = new Date("2026-01-01T00:00:00Z");
const MAC = "52:54:00:0b:8e:5c";

const host = (name: string, ready = true): Host => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Host",
  metadata: { name },
  spec: { zone: "z1" },
  status: {
    capacity: { cpu: 4, memory: "8Gi" },
    storagePools: [
      { name: `local-${name}`, ready: true, capacity: "20Gi" },
      { name: "shared", ready: true, capacity: "100Gi" },
    ],
    conditions: [
      { type: "Ready", status: ready ? "True" : "False", reason: "", message: "", lastTransitionTime: "" },
    ],
  },
});
const usage = (h: Host, cpu = 0): HostUsage => ({
  host: h,
  cpu,
  memoryBytes: 0n,
  antiAffinityGroups: new Set(),
});

const GI = 1024n ** 3n;
const pool = (name: string, spec: Partial<StoragePool["spec"]> = {}): StoragePool => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "StoragePool",
  metadata: { name },
  spec: { zone: "z1", type: "local", host: name.replace("local-", ""), ...spec },
});
const POOLS = [pool("local-h1"), pool("local-h2")];
const SHARED = pool("shared", { type: "sharedMountPoint", path: "/mnt/shared" });
const free =
  (pools: readonly StoragePool[], allocatedGi = 0n) =>
  (): PoolUsage[] =>
    pools.map((p) => ({ pool: p, allocatedBytes: allocatedGi * GI }));
const disk = (volume: string, sizeGi: bigint, inPool?: string): VolumeNeed => ({
  volume,
  sizeBytes: sizeGi * GI,
  tags: [],
  ...(inPool ? { pool: inPool } : {}),
});
const newRoot = [disk("web-root", 10n)];

const vm = (
  spec: Partial<VirtualMachine["spec"]> = {},
  status?: VirtualMachine["status"],
): VirtualMachine => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name: "web", namespace: "a", uid: UID, generation: 1, resourceVersion: "7" },
  spec: {
    zone: "z1",
    serviceOffering: "small",
    template: "tiny",
    nics: [{ name: "eth0", network: "net" }],
    ...spec,
  },
  ...(status ? { status } : {}),
});
const template = { metadata: { name: "tiny" }, spec: { source: { url: "http://x" } } } as Template;
const offering = { metadata: { name: "small" }, spec: { cpu: 2, memory: "1Gi" } } as ServiceOffering;
const dataVolume = (hostName?: string): Volume => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Volume",
  metadata: { name: "data", namespace: "a" },
  spec: { zone: "z1", type: "DATADISK", size: "1Gi" },
  ...(hostName ? { status: { host: hostName } } : {}),
});
const addressed: NicAddressing[] = [{ nic: "eth0", network: "net", address: "10.0.0.2" }];
const exhausted: NicAddressing[] = [
  {
    nic: "eth0",
    network: "net",
    problem: {
      reason: "AddressesExhausted",
      message: "network net has no free address left (10 in its range)",
    },
  },
];
const condition = (type: string, status: "True" | "False", reason: string): Condition => ({
  type,
  status,
  reason,
  message: "",
  lastTransitionTime: "2025-12-01T00:00:00Z",
  observedGeneration: 1,
});

function input(overrides: Partial<OrchestrationInput> = {}): OrchestrationInput {
  return {
    vm: vm(),
    template,
    offering,
    zone: undefined,
    rootVolume: "ready",
    dataVolumes: new Map(),
    nics: addressed,
    volumeNeeds: newRoot,
    moveTargets: new Map(),
    pools: POOLS,
    hostNamed: (name) => host(name),
    hostUsages: () => [usage(host("h1"), 1), usage(host("h2"))],
    poolUsages: free(POOLS),
    algorithm: "least-allocated",
    now: NOW,
    ...overrides,
  };
}

/** The decision in a table-friendly shape: host written, placement made, the three conditions' reasons. */
function summary(decision: ReturnType<typeof decideOrchestration>) {
  const reason = (type: string) => {
    const c = decision.status?.conditions.find((x) => x.type === type);
    return c ? `${c.status}/${c.reason}` : undefined;
  };
  return {
    host: decision.status?.host,
    placed: decision.placement?.host,
    scheduled: reason("Scheduled"),
    volumes: reason("VolumesReady"),
    networks: reason("NetworksReady"),
    requeue: decision.requeueAfterMs,
  };
}

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

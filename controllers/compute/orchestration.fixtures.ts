// Fixtures of the orchestration decision tables: hosts, pools, a VM and its inputs.
import type {
  Host,
  ServiceOffering,
  StoragePool,
  Template,
  VirtualMachine,
  Volume,
} from "../../crds/index.ts";
import type { PoolUsage, VolumeNeed } from "../../crds/volume-placement.ts";
import type { Condition } from "../../runtime/conditions.ts";
import type { NicAddressing } from "../network/ipam.ts";
import type { HostUsage } from "../scheduler/placement.ts";
import type { decideOrchestration, OrchestrationInput } from "./orchestration.ts";

export const UID = "0b8e5c3e-2f6d-4c1a-9a55-6d1f3e2b7c90";
export const NOW = new Date("2026-01-01T00:00:00Z");
export const MAC = "52:54:00:0b:8e:5c";

export const host = (name: string, ready = true): Host => ({
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
export const usage = (h: Host, cpu = 0): HostUsage => ({
  host: h,
  cpu,
  memoryBytes: 0n,
  groups: new Set(),
});

export const GI = 1024n ** 3n;
export const pool = (name: string, spec: Partial<StoragePool["spec"]> = {}): StoragePool => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "StoragePool",
  metadata: { name },
  spec: { zone: "z1", type: "local", host: name.replace("local-", ""), ...spec },
});
export const POOLS = [pool("local-h1"), pool("local-h2")];
export const SHARED = pool("shared", { type: "sharedMountPoint", path: "/mnt/shared" });
export const free =
  (pools: readonly StoragePool[], allocatedGi = 0n) =>
  (): PoolUsage[] =>
    pools.map((p) => ({ pool: p, allocatedBytes: allocatedGi * GI }));
export const disk = (volume: string, sizeGi: bigint, inPool?: string): VolumeNeed => ({
  volume,
  sizeBytes: sizeGi * GI,
  tags: [],
  ...(inPool ? { pool: inPool } : {}),
});
export const newRoot = [disk("web-root", 10n)];

export const vm = (
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
export const template = { metadata: { name: "tiny" }, spec: { source: { url: "http://x" } } } as Template;
export const offering = { metadata: { name: "small" }, spec: { cpu: 2, memory: "1Gi" } } as ServiceOffering;
export const dataVolume = (hostName?: string): Volume => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Volume",
  metadata: { name: "data", namespace: "a" },
  spec: { zone: "z1", type: "DATADISK", size: "1Gi" },
  ...(hostName ? { status: { host: hostName } } : {}),
});
export const addressed: NicAddressing[] = [{ nic: "eth0", network: "net", address: "10.0.0.2" }];
export const exhausted: NicAddressing[] = [
  {
    nic: "eth0",
    network: "net",
    problem: {
      reason: "AddressesExhausted",
      message: "network net has no free address left (10 in its range)",
    },
  },
];
export const condition = (type: string, status: "True" | "False", reason: string): Condition => ({
  type,
  status,
  reason,
  message: "",
  lastTransitionTime: "2025-12-01T00:00:00Z",
  observedGeneration: 1,
});

export function input(overrides: Partial<OrchestrationInput> = {}): OrchestrationInput {
  return {
    vm: vm(),
    template,
    offering,
    zone: undefined,
    rootVolume: "ready",
    accountLimits: {},
    accountUsage: () => ({ cpu: 0, memoryBytes: 0n }),
    dataVolumes: new Map(),
    nics: addressed,
    volumeNeeds: newRoot,
    moveTargets: new Map(),
    pools: POOLS,
    hostNamed: (name) => host(name),
    hostUsages: () => [usage(host("h1"), 1), usage(host("h2"))],
    poolUsages: free(POOLS),
    algorithm: "least-allocated",
    affinityGroupType: () => undefined,
    now: NOW,
    ...overrides,
  };
}

/** The decision in a table-friendly shape: host written, placement made, the three conditions' reasons. */
export function summary(decision: ReturnType<typeof decideOrchestration>) {
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

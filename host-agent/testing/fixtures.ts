// Objects for the host agent's unit tests: a prepared VM (as the orchestration leaves it), its
// offering, template, volumes and network. Each builder takes overrides.
import {
  localPoolName,
  type Network,
  type PoolType,
  rootVolumeName,
  type ServiceOffering,
  type Template,
  type VirtualMachine,
  type Volume,
} from "../../crds/index.ts";
import type { AgentStorage } from "../planner.ts";

export const CLUSTER = "c0ffee00-0000-4000-8000-000000000001";
export const HOST = "h1";
export const OWNER = { cluster: CLUSTER, host: HOST };

type VmOverrides = {
  spec?: Partial<VirtualMachine["spec"]>;
  status?: Partial<NonNullable<VirtualMachine["status"]>>;
  metadata?: Partial<VirtualMachine["metadata"]>;
};

const prepared = (generation: number) =>
  ["Scheduled", "VolumesReady", "NetworksReady"].map((type) => ({
    type,
    status: "True" as const,
    reason: "Ready",
    message: "",
    observedGeneration: generation,
    lastTransitionTime: "2026-11-30T00:00:00Z",
  }));

export function preparedVm(name: string, overrides: VmOverrides = {}): VirtualMachine {
  const uid = `00000000-0000-4000-8000-${String(name.length).padStart(4, "0")}${Buffer.from(name).toString("hex").slice(0, 8).padEnd(8, "0")}`;
  const generation = overrides.metadata?.generation ?? 1;
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "VirtualMachine",
    metadata: { name, namespace: "team-a", uid, generation, resourceVersion: "1", ...overrides.metadata },
    spec: {
      zone: "z1",
      serviceOffering: "small",
      template: "disk-image",
      nics: [{ name: "eth0", network: "backend" }],
      ...overrides.spec,
    },
    status: {
      host: HOST,
      nics: [{ name: "eth0", network: "backend", macAddress: "52:54:00:00:00:01", ipAddress: "10.20.0.10" }],
      conditions: prepared(generation),
      ...overrides.status,
    },
  };
}

export const offering: ServiceOffering = {
  apiVersion: "stratus.io/v1alpha1",
  kind: "ServiceOffering",
  metadata: { name: "small", uid: "so-1" },
  spec: { cpu: 1, memory: "256Mi" },
};

export const diskTemplate: Template = {
  apiVersion: "stratus.io/v1alpha1",
  kind: "Template",
  metadata: { name: "disk-image", uid: "tmpl-1" },
  spec: { source: { hostPath: "/images/tiny.qcow2" }, format: "qcow2" },
};

export const directBootTemplate: Template = {
  apiVersion: "stratus.io/v1alpha1",
  kind: "Template",
  metadata: { name: "kernel", uid: "tmpl-2" },
  spec: { source: { directBoot: { kernel: "/images/vmlinuz", initrd: "/images/initrd" } } },
};

export const network: Network = {
  apiVersion: "stratus.io/v1alpha1",
  kind: "Network",
  metadata: { name: "backend", namespace: "team-a", uid: "7c9e6679-7425-40de-944b-e07fc1f90ae7" },
  spec: { zone: "z1", type: "Isolated", cidr: "10.20.0.0/24" },
};

export function dataVolume(
  name: string,
  overrides: Partial<Volume["spec"]> = {},
  status?: Volume["status"],
): Volume {
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Volume",
    metadata: { name, namespace: "team-a", uid: `vol-${name}`, generation: 1 },
    spec: { zone: "z1", type: "DATADISK", size: "1Gi", ...overrides },
    ...(status ? { status } : {}),
  };
}

/** The ROOT Volume the orchestration makes for a VM (owned by it). */
export function rootVolume(vm: VirtualMachine, status?: Volume["status"]): Volume {
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Volume",
    metadata: {
      name: rootVolumeName(vm.metadata.name as string),
      namespace: vm.metadata.namespace as string,
      uid: `root-of-${vm.metadata.uid}`,
      generation: 1,
      ownerReferences: [
        {
          apiVersion: "stratus.io/v1alpha1",
          kind: "VirtualMachine",
          name: vm.metadata.name as string,
          uid: vm.metadata.uid as string,
        },
      ],
    },
    spec: { zone: "z1", type: "ROOT", size: "1Gi", source: { template: vm.spec.template } },
    ...(status ? { status } : {}),
  };
}

export const LOCAL_POOL = localPoolName(HOST);

/** The pools of a host that reaches only its local pool at `path` (and, if given, shared pools). */
export function hostStorage(
  path = "/pool",
  shared: Record<string, string> = {},
): AgentStorage & { typeOf(pool: string): PoolType | undefined } {
  return {
    pathOf: (pool) => (pool === LOCAL_POOL ? path : shared[pool]),
    poolForNew: () => ({ pool: LOCAL_POOL }),
    typeOf: (pool) => (pool === LOCAL_POOL ? "local" : shared[pool] ? "sharedMountPoint" : undefined),
  };
}

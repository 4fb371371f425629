// The API server itself refuses bad objects, with messages a person understands: a table of
// invalid objects across the kinds, and updates that break immutability.
import { randomBytes } from "node:crypto";
import {
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
} from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import { sharedControlPlane, useNamespace } from "./support.ts";

type Json = Record<string, unknown>;
type Mutation = (object: { spec: Json; metadata?: unknown }) => void;

const valid: Record<string, () => { kind: string; spec: Json; name?: string }> = {
  VirtualMachine: () => ({
    kind: "VirtualMachine",
    spec: {
      zone: "z1",
      serviceOffering: "tiny",
      template: "tiny-linux",
      nics: [{ name: "eth0", network: "net1" }],
    },
  }),
  ServiceOffering: () => ({ kind: "ServiceOffering", spec: { cpu: 1, memory: "256Mi" } }),
  DiskOffering: () => ({ kind: "DiskOffering", spec: { size: "10Gi" } }),
  Template: () => ({ kind: "Template", spec: { source: { url: "https://images.example.com/tiny.qcow2" } } }),
  Network: () => ({ kind: "Network", spec: { zone: "z1", cidr: "10.1.1.0/24", gateway: "10.1.1.1" } }),
  Volume: () => ({ kind: "Volume", spec: { zone: "z1", size: "20Gi" } }),
  IPAddress: () => ({
    kind: "IPAddress",
    name: "net1-10-1-1-5",
    spec: { network: "net1", address: "10.1.1.5" },
  }),
  Host: () => ({ kind: "Host", spec: { zone: "z1" } }),
  Zone: () => ({ kind: "Zone", spec: { dns: ["9.9.9.9"] } }),
  AsyncJob: () => ({ kind: "AsyncJob", spec: { command: "stopVirtualMachine", user: "alice" } }),
};

const CLUSTER_SCOPED = new Set(["ServiceOffering", "DiskOffering", "Template", "Host", "Zone"]);

/** [kind, what is wrong, mutation, text the API server's message must contain] */
const invalidObjects: [string, string, Mutation, string][] = [
  ["VirtualMachine", "no zone", (o) => delete o.spec.zone, "spec.zone: Required value"],
  [
    "VirtualMachine",
    "unknown run strategy",
    (o) => (o.spec.runStrategy = "Sometimes"),
    'spec.runStrategy: Unsupported value: "Sometimes": supported values: "Always", "RerunOnFailure", "Manual", "Halted"',
  ],
  [
    "VirtualMachine",
    "static IP out of range",
    (o) => ((o.spec.nics as Json[])[0] = { name: "eth0", network: "net1", ipAddress: "10.1.1.300" }),
    'spec.nics[0].ipAddress: Invalid value: "10.1.1.300": must be an IPv4 address such as 10.1.1.10',
  ],
  [
    "VirtualMachine",
    "IPv6 static IP",
    (o) => ((o.spec.nics as Json[])[0] = { name: "eth0", network: "net1", ipAddress: "fd00::1" }),
    "must be an IPv4 address such as 10.1.1.10",
  ],
  [
    "VirtualMachine",
    "malformed MAC",
    (o) => ((o.spec.nics as Json[])[0] = { name: "eth0", network: "net1", macAddress: "52:54:00:zz:00:01" }),
    "must be a lower-case MAC address such as 52:54:00:12:34:56",
  ],
  [
    "VirtualMachine",
    "multicast MAC",
    (o) => ((o.spec.nics as Json[])[0] = { name: "eth0", network: "net1", macAddress: "01:00:5e:00:00:01" }),
    "must be a unicast MAC address",
  ],
  [
    "VirtualMachine",
    "two NICs with one name",
    (o) => (o.spec.nics as Json[]).push({ name: "eth0", network: "net2" }),
    "spec.nics[1]: Duplicate value",
  ],
  [
    "VirtualMachine",
    "two NICs with one MAC",
    (o) =>
      (o.spec.nics = [
        { name: "eth0", network: "a", macAddress: "52:54:00:00:00:01" },
        { name: "eth1", network: "b", macAddress: "52:54:00:00:00:01" },
      ]),
    "two NICs cannot have the same MAC address",
  ],
  [
    "VirtualMachine",
    "two volume slots with one name",
    (o) =>
      (o.spec.dataVolumes = [
        { name: "data", volume: "v1" },
        { name: "data", volume: "v2" },
      ]),
    "spec.dataVolumes[1]: Duplicate value",
  ],
  [
    "VirtualMachine",
    "one volume attached twice",
    (o) =>
      (o.spec.dataVolumes = [
        { name: "a", volume: "v1" },
        { name: "b", volume: "v1" },
      ]),
    "a volume can be attached only once",
  ],
  [
    "VirtualMachine",
    "root disk of 0",
    (o) => (o.spec.rootDisk = { size: "0" }),
    'spec.rootDisk.size: Invalid value: "0": must be at least 1Gi',
  ],
  [
    "VirtualMachine",
    "root disk size that is no quantity",
    (o) => (o.spec.rootDisk = { size: "lots" }),
    "must be a quantity such as 512Mi or 20Gi",
  ],
  [
    "VirtualMachine",
    "root disk of 100Ti",
    (o) => (o.spec.rootDisk = { size: "100Ti" }),
    "must be at most 64Ti",
  ],
  [
    "VirtualMachine",
    "a user data Secret that is no object name",
    (o) => (o.spec.userDataSecret = "Not A Secret!"),
    "spec.userDataSecret: Invalid value",
  ],
  [
    "VirtualMachine",
    "17 NICs",
    (o) => (o.spec.nics = Array.from({ length: 17 }, (_, i) => ({ name: `eth${i}`, network: "net1" }))),
    "spec.nics: Too many: 17: must have at most 16 items",
  ],
  [
    "VirtualMachine",
    "NIC name in capitals",
    (o) => ((o.spec.nics as Json[])[0] = { name: "ETH0", network: "net1" }),
    'spec.nics[0].name: Invalid value: "ETH0"',
  ],
  [
    "VirtualMachine",
    "empty offering name",
    (o) => (o.spec.serviceOffering = ""),
    'spec.serviceOffering: Invalid value: ""',
  ],
  ["VirtualMachine", "empty SSH key", (o) => (o.spec.sshKeys = [""]), "spec.sshKeys[0]"],
  [
    "ServiceOffering",
    "0 CPUs",
    (o) => (o.spec.cpu = 0),
    "spec.cpu: Invalid value: 0: spec.cpu in body should be greater than or equal to 1",
  ],
  [
    "ServiceOffering",
    "1000 CPUs",
    (o) => (o.spec.cpu = 1000),
    "spec.cpu in body should be less than or equal to 256",
  ],
  [
    "ServiceOffering",
    "32Mi of memory",
    (o) => (o.spec.memory = "32Mi"),
    'spec.memory: Invalid value: "32Mi": must be at least 64Mi',
  ],
  ["ServiceOffering", "no memory", (o) => delete o.spec.memory, "spec.memory: Required value"],
  [
    "DiskOffering",
    "IOPS max below min",
    (o) => (o.spec.iops = { min: 500, max: 100 }),
    "iops.max must be at least iops.min",
  ],
  [
    "DiskOffering",
    "512Mi disk",
    (o) => (o.spec.size = "512Mi"),
    'spec.size: Invalid value: "512Mi": must be at least 1Gi',
  ],
  [
    "Template",
    "ftp URL",
    (o) => (o.spec.source = { url: "ftp://images.example.com/a.qcow2" }),
    'spec.source.url: Invalid value: "ftp://images.example.com/a.qcow2": must be an http:// or https:// URL',
  ],
  [
    "Template",
    "URL that is no URL",
    (o) => (o.spec.source = { url: "tiny.qcow2" }),
    "must be an http:// or https:// URL",
  ],
  [
    "Template",
    "direct-boot kernel neither URL nor absolute path",
    (o) => (o.spec.source = { directBoot: { kernel: "vmlinuz", initrd: "/boot/initrd.gz" } }),
    'spec.source.directBoot.kernel: Invalid value: "vmlinuz": must be an http:// or https:// URL, or an absolute path on the host',
  ],
  [
    "Template",
    "url and hostPath",
    (o) => (o.spec.source = { url: "https://a.example/x.qcow2", hostPath: "/images/x.qcow2" }),
    "source must set exactly one of url, hostPath, directBoot, volume or snapshot",
  ],
  [
    "Template",
    "no source",
    (o) => (o.spec.source = {}),
    "source must set exactly one of url, hostPath, directBoot, volume or snapshot",
  ],
  [
    "Template",
    "relative hostPath",
    (o) => (o.spec.source = { hostPath: "images/x.qcow2" }),
    "spec.source.hostPath in body should match '^/'",
  ],
  [
    "Template",
    "md5 checksum",
    (o) => (o.spec.checksum = "md5:0123"),
    "spec.checksum in body should match '^sha256:[0-9a-f]{64}$'",
  ],
  [
    "Template",
    "vmdk format",
    (o) => (o.spec.format = "vmdk"),
    'spec.format: Unsupported value: "vmdk": supported values: "qcow2", "raw"',
  ],
  [
    "Network",
    "/33 CIDR",
    (o) => {
      o.spec.cidr = "10.1.1.0/33";
      delete o.spec.gateway;
    },
    "cidr must be an IPv4 CIDR such as 10.1.1.0/24",
  ],
  [
    "Network",
    "CIDR with host bits",
    (o) => (o.spec.cidr = "10.1.1.5/24"),
    "cidr must name the network address (e.g. 10.1.1.0/24, not 10.1.1.5/24)",
  ],
  [
    "Network",
    "/30 CIDR",
    (o) => {
      o.spec.cidr = "10.1.1.0/30";
      delete o.spec.gateway;
    },
    "cidr prefix length must be between /8 and /29",
  ],
  [
    "Network",
    "gateway outside the CIDR",
    (o) => (o.spec.gateway = "10.1.2.1"),
    "spec.gateway: Invalid value: gateway must be inside the cidr",
  ],
  [
    "Network",
    "Isolated without CIDR",
    (o) => {
      o.spec = { zone: "z1" };
    },
    "Shared and Isolated networks need a cidr",
  ],
  [
    "Network",
    "L2 with a CIDR",
    (o) => {
      o.spec.type = "L2";
      delete o.spec.gateway;
    },
    "an L2 network has no cidr",
  ],
  [
    "Network",
    "VLAN 4095",
    (o) => (o.spec.vlan = 4095),
    "spec.vlan in body should be less than or equal to 4094",
  ],
  ["Network", "VLAN 0", (o) => (o.spec.vlan = 0), "spec.vlan in body should be greater than or equal to 1"],
  [
    "Network",
    "VLAN and VNI",
    (o) => Object.assign(o.spec, { vlan: 10, vni: 5000 }),
    "set vlan or vni, not both",
  ],
  [
    "Network",
    "IP range outside the CIDR",
    (o) => (o.spec.ipRange = { start: "10.1.1.10", end: "10.1.9.20" }),
    "spec.ipRange: Invalid value: ipRange must lie inside the cidr",
  ],
  ["Network", "Routed type", (o) => (o.spec.type = "Routed"), 'spec.type: Unsupported value: "Routed"'],
  [
    "Volume",
    "neither size nor offering",
    (o) => delete o.spec.size,
    "a volume needs a size or a diskOffering",
  ],
  [
    "Volume",
    "SWAP type",
    (o) => (o.spec.type = "SWAP"),
    'spec.type: Unsupported value: "SWAP": supported values: "ROOT", "DATADISK"',
  ],
  [
    "IPAddress",
    "name that is not the address",
    (o) => ((o.metadata as Json).name = "net1-anything"),
    "an IPAddress must be named <network>-<address with dots replaced by dashes>",
  ],
  [
    "IPAddress",
    "address that is no address",
    (o) => {
      o.spec.address = "10.1.1";
      (o.metadata as Json).name = "net1-10-1-1";
    },
    'spec.address: Invalid value: "10.1.1": must be an IPv4 address',
  ],
  [
    "Host",
    "overcommit below 1",
    (o) => (o.spec.cpuOvercommitRatio = 0.5),
    "spec.cpuOvercommitRatio in body should be greater than or equal to 1",
  ],
  ["Host", "no zone", (o) => delete o.spec.zone, "spec.zone: Required value"],
  [
    "Zone",
    "DNS server that is no address",
    (o) => (o.spec.dns = ["9.9.9"]),
    'spec.dns[0]: Invalid value: "9.9.9": must be an IPv4 address',
  ],
  [
    "Zone",
    "Basic network type",
    (o) => (o.spec.networkType = "Basic"),
    'spec.networkType: Unsupported value: "Basic": supported values: "Advanced"',
  ],
  [
    "AsyncJob",
    "command with a space",
    (o) => (o.spec.command = "deploy vm"),
    "spec.command in body should match '^[a-zA-Z]+$'",
  ],
];

/** [kind, what changes, change, message]: each applied as an update to a valid object. */
const immutableChanges: [string, string, Mutation, string][] = [
  [
    "VirtualMachine",
    "zone",
    (o) => (o.spec.zone = "z2"),
    'spec.zone: Invalid value: "z2": zone cannot be changed after creation',
  ],
  [
    "VirtualMachine",
    "template",
    (o) => (o.spec.template = "other"),
    "template cannot be changed after creation",
  ],
  [
    "Network",
    "cidr",
    (o) => {
      o.spec.cidr = "10.2.0.0/24";
      delete o.spec.gateway;
    },
    "cidr cannot be changed after creation",
  ],
  ["Network", "vlan", (o) => (o.spec.vlan = 100), "vlan cannot be changed after creation"],
  ["Volume", "a smaller size", (o) => (o.spec.size = "10Gi"), "a volume can grow but never shrink"],
  [
    "Volume",
    "no size",
    (o) => {
      o.spec.diskOffering = "do1";
      delete o.spec.size;
    },
    "size cannot be removed once set",
  ],
  ["Volume", "type", (o) => (o.spec.type = "ROOT"), "type cannot be changed after creation"],
  [
    "IPAddress",
    "VM",
    (o) => (o.spec.virtualMachine = "vm2"),
    "an IPAddress cannot be changed; delete it and allocate again",
  ],
  ["Host", "zone", (o) => (o.spec.zone = "z2"), "zone cannot be changed after creation"],
  ...(
    [
      ["source", (o) => (o.spec.source = { url: "https://images.example.com/other.qcow2" })],
      ["checksum", (o) => (o.spec.checksum = `sha256:${"a".repeat(64)}`)],
      ["format", (o) => (o.spec.format = "raw")],
    ] as [string, Mutation][]
  ).map(([what, change]): [string, string, Mutation, string] => [
    "Template",
    what,
    change,
    "a template's image (source, checksum, format) cannot be changed: disks are made from it; register a new template",
  ]),
  [
    "AsyncJob",
    "command",
    (o) => (o.spec.command = "startVirtualMachine"),
    "a job's command cannot be changed",
  ],
];

function errorMessage(error: unknown): string {
  const body = (error as { body?: unknown }).body;
  try {
    return (JSON.parse(String(body)) as { message: string }).message;
  } catch {
    return String(error);
  }
}

describe("schema validation by the API server", () => {
  let kubeConfig: KubeConfig;
  let namespace: string;
  let objects: KubernetesObjectApi;

  const build = (kindName: string, mutate?: Mutation): KubernetesObject & { spec: Json } => {
    const base = valid[kindName]?.();
    if (!base) throw new Error(`no valid ${kindName}`);
    const object = {
      apiVersion: "stratus.io/v1alpha1",
      kind: base.kind,
      metadata: {
        name: base.name ?? `v-${randomBytes(3).toString("hex")}`,
        ...(CLUSTER_SCOPED.has(kindName) ? {} : { namespace }),
      },
      spec: base.spec,
    };
    mutate?.(object);
    return object;
  };

  beforeAll(async () => {
    kubeConfig = (await sharedControlPlane()).kubeConfig;
    namespace = await useNamespace(kubeConfig, "validation");
    objects = KubernetesObjectApi.makeApiClient(kubeConfig);
  });

  it("accepts the valid object of every kind", async () => {
    for (const kindName of Object.keys(valid)) {
      await expect(objects.create(build(kindName), undefined, "All"), kindName).resolves.toBeTruthy();
    }
  });

  it(`has at least 40 invalid objects in its table (${invalidObjects.length})`, () => {
    expect(invalidObjects.length).toBeGreaterThanOrEqual(40);
  });

  it.each(invalidObjects)("%s: refuses %s", async (kindName, _what, mutate, message) => {
    const error = await objects.create(build(kindName, mutate), undefined, "All").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error, "the API server accepted it").toBeDefined();
    expect((error as { code?: number }).code).toBe(422);
    expect(errorMessage(error)).toContain(message);
  });

  it.each(immutableChanges)("%s: refuses a change of %s", async (kindName, _what, change, message) => {
    const created = await objects.create(build(kindName));
    const updated = structuredClone(created) as KubernetesObject & { spec: Json };
    change(updated);
    const error = await objects.replace(updated).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error, "the API server accepted the change").toBeDefined();
    expect(errorMessage(error)).toContain(message);
    await objects.delete(created);
  });

  it("lets a volume grow", async () => {
    const created = (await objects.create(build("Volume"))) as KubernetesObject & { spec: Json };
    created.spec.size = "30Gi";
    const grown = (await objects.replace(created)) as KubernetesObject & { spec: Json };
    expect(grown.spec.size).toBe("30Gi");
  });

  it("freezes a finished job's result", async () => {
    const custom = kubeConfig.makeApiClient(CustomObjectsApi);
    const job = await objects.create(build("AsyncJob"));
    const name = job.metadata?.name as string;
    const target = { group: "stratus.io", version: "v1alpha1", namespace, plural: "asyncjobs", name };
    const finished = { state: "Succeeded", finishedAt: "2026-11-25T10:00:00Z", result: { success: true } };
    const written = (await custom.replaceNamespacedCustomObjectStatus({
      ...target,
      body: { ...job, status: finished },
    })) as Json;
    const error = await custom
      .replaceNamespacedCustomObjectStatus({
        ...target,
        body: { ...written, status: { ...finished, state: "Failed" } },
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error, "the API server changed a finished job").toBeDefined();
    expect(errorMessage(error)).toContain("a finished job's result is frozen");
  });
});

import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import {
  AbsolutePath,
  Conditions,
  IPv4Address,
  immutable,
  Labels,
  ObjectName,
  ObservedGeneration,
  Quantity,
  StringEnum,
} from "../schema.ts";
import { ALLOCATION_STATES } from "./zone.ts";

/** CloudStack's resource states; three are reached through maintenance, Degraded by an administrator. */
export const RESOURCE_STATES = [
  "Enabled",
  "Disabled",
  "PrepareForMaintenance",
  "Maintenance",
  "ErrorInMaintenance",
  "Degraded",
] as const;

const OvercommitRatio = (what: string) =>
  Type.Optional(
    Type.Number({
      minimum: 1,
      maximum: 16,
      default: 1,
      description: `How many times its physical ${what} the host may promise to VMs (CloudStack's overprovisioning factor).`,
    }),
  );

export const HostKind = defineKind({
  kind: "Host",
  plural: "hosts",
  singular: "host",
  shortNames: ["hv"],
  scope: "Cluster",
  description:
    "A hypervisor host. Its agent registers it and reports capacity in status; administrators own the spec (zone, tags, maintenance).",
  spec: Type.Object(
    {
      zone: ObjectName({
        description: "The zone the host belongs to.",
        "x-kubernetes-validations": [immutable("zone")],
      }),
      allocationState: Type.Optional(
        StringEnum(ALLOCATION_STATES, {
          description: "Disabled: no new VMs are placed here; running VMs stay.",
          default: "Enabled",
        }),
      ),
      maintenance: Type.Optional(
        Type.Boolean({
          default: false,
          description:
            "true moves every VM off the host (PrepareForMaintenance, then Maintenance); false returns it to service.",
        }),
      ),
      degraded: Type.Optional(
        Type.Boolean({
          default: false,
          description:
            "An administrator's word that nothing runs on the host any more (CloudStack's declareHostAsDegraded): while the host is not Ready, its VMs, with HA or without, start on other hosts at once. No VM is placed here while it is true.",
        }),
      ),
      tags: Labels(
        "Host tags; VMs whose offering asks for tags are placed only on hosts that have all of them.",
      ),
      cpuOvercommitRatio: OvercommitRatio("CPU"),
      memoryOvercommitRatio: OvercommitRatio("memory"),
    },
    { description: "What the administrator wants of the host." },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      hypervisor: Type.Optional(
        Type.Object(
          {
            type: StringEnum(["KVM", "QEMU", "Simulator"] as const, {
              description:
                "KVM (hardware virtualisation), QEMU (emulation) or Simulator (libvirt test driver).",
            }),
            version: Type.String({ maxLength: 64, description: "Hypervisor version as libvirt reports it." }),
            libvirtVersion: Type.String({ maxLength: 64, description: "libvirt library version." }),
            uri: Type.String({ maxLength: 256, description: "The libvirt connection URI the agent uses." }),
          },
          { description: "The hypervisor, written by the agent at registration." },
        ),
      ),
      agentVersion: Type.Optional(
        Type.String({ maxLength: 64, description: "Version of the Stratus host agent." }),
      ),
      consoleEndpoint: Type.Optional(
        Type.String({
          maxLength: 261,
          pattern: "^[^\\s/]+:[0-9]{1,5}$",
          description: "HOST:PORT of the agent's serial console relay (WebSocket), for the API component.",
        }),
      ),
      consoleCertificate: Type.Optional(
        Type.String({
          maxLength: 4096,
          pattern: "^-----BEGIN CERTIFICATE-----",
          description:
            "The console relay's self-signed TLS certificate (PEM), the only one the API component trusts for this host.",
        }),
      ),
      migrationUri: Type.Optional(
        Type.String({
          maxLength: 512,
          pattern: "^(qemu|qemu\\+(tcp|tls|ssh|unix)|test)://",
          description:
            "The libvirt URI other hosts' agents open to live-migrate a guest here, written by the agent (--migration-uri).",
        }),
      ),
      migrationAddress: Type.Optional(
        Type.String({
          maxLength: 261,
          pattern: "^[^\\s/]+$",
          description:
            "The address QEMU's migration stream connects to (tcp://ADDRESS:port), written by the agent.",
        }),
      ),
      address: Type.Optional(
        IPv4Address({ description: "Address the host is reached at (console relay, migration)." }),
      ),
      capacity: Type.Optional(
        Type.Object(
          {
            cpu: Type.Integer({ minimum: 0, description: "Physical CPU cores." }),
            memory: Quantity({ description: "Physical memory." }),
            storage: Type.Optional(Quantity({ description: "Size of the host's local storage pool." })),
          },
          { description: "Physical capacity, written by the agent." },
        ),
      ),
      storagePools: Type.Optional(
        Type.Array(
          Type.Object(
            {
              name: ObjectName({ description: "The StoragePool." }),
              ready: Type.Boolean({ description: "The agent can create disks in it." }),
              path: Type.Optional(AbsolutePath("Where the pool is on this host.")),
              capacity: Type.Optional(Quantity({ description: "Size of the pool as this host sees it." })),
              available: Type.Optional(Quantity({ description: "Free space as this host sees it." })),
              message: Type.Optional(Type.String({ maxLength: 1024, description: "Why it is not ready." })),
            },
            { description: "A pool as this host's agent sees it." },
          ),
          {
            description: "The StoragePools this host reaches, written by its agent.",
            maxItems: 64,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
          },
        ),
      ),
      allocated: Type.Optional(
        Type.Object(
          {
            cpu: Type.Integer({
              minimum: 0,
              description: "CPU cores promised to the VMs placed on the host.",
            }),
            memory: Quantity({ description: "Memory promised to the VMs placed on the host." }),
            virtualMachines: Type.Integer({ minimum: 0, description: "VMs placed on the host." }),
          },
          { description: "What VMs placed on the host use, rolled up by the fabric controller." },
        ),
      ),
      resourceState: Type.Optional(
        StringEnum(RESOURCE_STATES, { description: "CloudStack resource state." }),
      ),
      conditions: Conditions(
        "Ready: the agent's heartbeat Lease is current. Schedulable: the host accepts new VMs.",
      ),
    },
    { description: "The host as its agent and the fabric controller observe it." },
  ),
  printerColumns: [
    { name: "Zone", type: "string", jsonPath: ".spec.zone", description: "Zone." },
    {
      name: "Ready",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Ready")].status',
      description: "Heartbeat current.",
    },
    {
      name: "State",
      type: "string",
      jsonPath: ".status.resourceState",
      description: "CloudStack resource state.",
    },
    {
      name: "CPU-Alloc",
      type: "integer",
      jsonPath: ".status.allocated.cpu",
      description: "CPU cores allocated to VMs.",
    },
    {
      name: "CPU-Cap",
      type: "integer",
      jsonPath: ".status.capacity.cpu",
      description: "Physical CPU cores.",
    },
    {
      name: "Mem-Alloc",
      type: "string",
      jsonPath: ".status.allocated.memory",
      description: "Memory allocated to VMs.",
    },
    { name: "Mem-Cap", type: "string", jsonPath: ".status.capacity.memory", description: "Physical memory." },
    {
      name: "Hypervisor",
      type: "string",
      jsonPath: ".status.hypervisor.type",
      description: "Hypervisor.",
      priority: 1,
    },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since registration.",
    },
  ],
  selectableFields: [".spec.zone"],
});

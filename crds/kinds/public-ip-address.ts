import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import {
  AllocationStatus,
  Conditions,
  IPv4Address,
  immutable,
  ObjectName,
  ObservedGeneration,
} from "../schema.ts";

/** The name of the source-NAT address the network controller holds for an isolated network. */
export function sourceNatName(network: string): string {
  return `${network}-snat`;
}

export const PublicIPAddressKind = defineKind({
  kind: "PublicIPAddress",
  plural: "publicipaddresses",
  singular: "publicipaddress",
  shortNames: ["pip"],
  scope: "Namespaced",
  description:
    "An address of the zone's public network held by an account for one of its isolated networks (CloudStack's associateIpAddress). The network controller allocates it from the zone's public ranges; <network>-snat is the network's source-NAT address, which the network controller makes itself.",
  spec: Type.Object(
    {
      network: ObjectName({
        description: "The isolated Network whose router holds the address.",
        "x-kubernetes-validations": [immutable("network")],
      }),
      staticNat: Type.Optional(
        Type.Object(
          {
            virtualMachine: ObjectName({
              description:
                "The VM of the network that the address maps to, both ways (CloudStack's enableStaticNat).",
            }),
          },
          {
            description:
              "Static NAT: all traffic to the address goes to the VM, and the VM goes out from it.",
          },
        ),
      ),
    },
    { description: "What the account wants of the address." },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      address: Type.Optional(IPv4Address({ description: "The allocated public address." })),
      sourceNat: Type.Optional(Type.Boolean({ description: "The network's source-NAT address." })),
      conditions: Conditions(
        "Allocated: the address is held (False: the zone has no public network or no free address). StaticNat: the static NAT is in force (False: why not).",
      ),
    },
    { description: "The address as allocated." },
  ),
  printerColumns: [
    { name: "Network", type: "string", jsonPath: ".spec.network", description: "Network." },
    { name: "Address", type: "string", jsonPath: ".status.address", description: "Public address." },
    {
      name: "SourceNAT",
      type: "boolean",
      jsonPath: ".status.sourceNat",
      description: "The network's source-NAT address.",
    },
    {
      name: "StaticNAT",
      type: "string",
      jsonPath: ".spec.staticNat.virtualMachine",
      description: "VM the address maps to.",
    },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
  selectableFields: [".spec.network"],
  validations: [
    {
      rule: "!self.metadata.name.endsWith('-snat') || self.metadata.name == self.spec.network + '-snat'",
      message: "a name ending in -snat is the source-NAT address of the network it names: <network>-snat",
    },
  ],
});

/**
 * The object name of a zone's public address: one name per address, so creating the object is the
 * allocation and etcd refuses a second allocator's create (as IPAddress does for guest addresses).
 */
export function publicIPClaimName(zone: string, address: string): string {
  return `${zone}-${address.replaceAll(".", "-")}`;
}

export const PublicIPClaimKind = defineKind({
  kind: "PublicIPClaim",
  plural: "publicipclaims",
  singular: "publicipclaim",
  shortNames: ["pipclaim"],
  scope: "Cluster",
  description:
    "One public address of a zone held by a PublicIPAddress. Its name is <zone>-<address with dashes>, so two accounts can never hold the same address; the network controller creates and deletes it.",
  spec: Type.Object(
    {
      zone: ObjectName({ description: "The zone the address belongs to." }),
      address: IPv4Address({ description: "The public address." }),
      holder: Type.Object(
        {
          namespace: ObjectName({ description: "The PublicIPAddress's namespace (account)." }),
          name: ObjectName({ description: "The PublicIPAddress's name." }),
          uid: Type.String({
            maxLength: 36,
            description: "Its UID: an object of the same name later is another.",
          }),
        },
        { description: "The PublicIPAddress holding the address." },
      ),
    },
    {
      description: "The allocation. It never changes; release an address by deleting the object.",
      "x-kubernetes-validations": [
        {
          rule: "self == oldSelf",
          message: "a PublicIPClaim cannot be changed; delete it and allocate again",
        },
      ],
    },
  ),
  status: AllocationStatus,
  printerColumns: [
    { name: "Zone", type: "string", jsonPath: ".spec.zone", description: "Zone." },
    { name: "Address", type: "string", jsonPath: ".spec.address", description: "Public address." },
    {
      name: "Namespace",
      type: "string",
      jsonPath: ".spec.holder.namespace",
      description: "Holder's namespace.",
    },
    { name: "Holder", type: "string", jsonPath: ".spec.holder.name", description: "Holder." },
  ],
  validations: [
    {
      rule: "self.metadata.name == self.spec.zone + '-' + self.spec.address.replace('.', '-')",
      message: "a PublicIPClaim must be named <zone>-<address with dots replaced by dashes>",
    },
  ],
});

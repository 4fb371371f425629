import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { AllocationStatus, IPv4Address, LocalName, ObjectName } from "../schema.ts";

/**
 * The object name of an address: one name per address, so creating the object is the allocation
 * and etcd refuses a second allocator's create.
 */
export function ipAddressName(network: string, address: string): string {
  return `${network}-${address.replaceAll(".", "-")}`;
}

export const IPAddressKind = defineKind({
  kind: "IPAddress",
  plural: "ipaddresses",
  singular: "ipaddress",
  // Not "ip": since Kubernetes 1.33 that short name belongs to networking.k8s.io IPAddress, which wins.
  shortNames: ["sip"],
  scope: "Namespaced",
  description:
    "One allocated address of a Network. Its name is <network>-<address with dashes>, so two allocators can never hold the same address.",
  spec: Type.Object(
    {
      network: ObjectName({ description: "The Network the address belongs to." }),
      address: IPv4Address({ description: "The address." }),
      virtualMachine: Type.Optional(ObjectName({ description: "The VM holding the address." })),
      nic: Type.Optional(LocalName({ description: "The VM's NIC holding the address." })),
      static: Type.Optional(
        Type.Boolean({
          default: false,
          description: "Asked for by the VM spec, rather than picked by IPAM.",
        }),
      ),
    },
    {
      description: "The allocation. It never changes; release an address by deleting the object.",
      "x-kubernetes-validations": [
        { rule: "self == oldSelf", message: "an IPAddress cannot be changed; delete it and allocate again" },
      ],
    },
  ),
  status: AllocationStatus,
  printerColumns: [
    { name: "Network", type: "string", jsonPath: ".spec.network", description: "Network." },
    { name: "Address", type: "string", jsonPath: ".spec.address", description: "Address." },
    { name: "VM", type: "string", jsonPath: ".spec.virtualMachine", description: "VM holding it." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since allocation.",
    },
  ],
  selectableFields: [".spec.network", ".spec.virtualMachine"],
  validations: [
    {
      rule: "self.metadata.name == self.spec.network + '-' + self.spec.address.replace('.', '-')",
      message:
        "an IPAddress must be named <network>-<address with dots replaced by dashes>, e.g. net1-10-1-1-5",
    },
  ],
});

import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { AllocationStatus, ObjectName } from "../schema.ts";

/**
 * The object name of a zone's VLAN: one name per VLAN, so creating the object is the allocation
 * and etcd refuses a second allocator's create (as IPAddress does for addresses).
 */
export function guestVlanName(zone: string, vlan: number): string {
  return `${zone}-${vlan}`;
}

export const GuestVlanKind = defineKind({
  kind: "GuestVlan",
  plural: "guestvlans",
  singular: "guestvlan",
  shortNames: ["gvlan"],
  scope: "Cluster",
  description:
    "One VLAN of a zone held by a Network. Its name is <zone>-<vlan>, so two networks can never hold the same VLAN; the network controller creates and deletes it.",
  spec: Type.Object(
    {
      zone: ObjectName({ description: "The zone the VLAN belongs to." }),
      vlan: Type.Integer({ minimum: 1, maximum: 4094, description: "The 802.1Q VLAN id." }),
      network: Type.Object(
        {
          namespace: ObjectName({ description: "The Network's namespace (account)." }),
          name: ObjectName({ description: "The Network's name." }),
          uid: Type.String({
            maxLength: 36,
            description: "The Network's UID: a network of the same name later is another.",
          }),
        },
        { description: "The Network holding the VLAN." },
      ),
    },
    {
      description: "The allocation. It never changes; release a VLAN by deleting the object.",
      "x-kubernetes-validations": [
        { rule: "self == oldSelf", message: "a GuestVlan cannot be changed; delete it and allocate again" },
      ],
    },
  ),
  status: AllocationStatus,
  printerColumns: [
    { name: "Zone", type: "string", jsonPath: ".spec.zone", description: "Zone." },
    { name: "VLAN", type: "integer", jsonPath: ".spec.vlan", description: "VLAN id." },
    {
      name: "Namespace",
      type: "string",
      jsonPath: ".spec.network.namespace",
      description: "Network's namespace.",
    },
    { name: "Network", type: "string", jsonPath: ".spec.network.name", description: "Network." },
  ],
});

import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { immutable, StringEnum } from "../schema.ts";

/** CloudStack's host affinity types, as listAffinityGroupTypes names them. */
export const AFFINITY_TYPES = ["host anti-affinity", "host affinity"] as const;
export type AffinityType = (typeof AFFINITY_TYPES)[number];

export const AffinityGroupKind = defineKind({
  kind: "AffinityGroup",
  plural: "affinitygroups",
  singular: "affinitygroup",
  shortNames: ["ag"],
  scope: "Namespaced",
  description:
    "A CloudStack affinity group: VMs of the namespace that name it in spec.placement.affinityGroups run on one host (host affinity) or never share one (host anti-affinity).",
  spec: Type.Object(
    {
      type: StringEnum(AFFINITY_TYPES, {
        description:
          "host affinity: all members on one host. host anti-affinity: no two members on one host.",
        "x-kubernetes-validations": [immutable("type")],
      }),
      description: Type.Optional(Type.String({ maxLength: 4096, description: "Free text." })),
    },
    { description: "The group's rule." },
  ),
  status: Type.Object(
    {},
    {
      description:
        "Nothing is observed: the members are the VMs that name the group, the scheduler reads them.",
    },
  ),
  printerColumns: [
    { name: "Type", type: "string", jsonPath: ".spec.type", description: "The placement rule." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
});

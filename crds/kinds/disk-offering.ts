import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { Conditions, Labels, ObservedGeneration, Quantity, StringEnum } from "../schema.ts";
import { STORAGE_TYPES } from "./storage-pool.ts";

export const DiskOfferingKind = defineKind({
  kind: "DiskOffering",
  plural: "diskofferings",
  singular: "diskoffering",
  shortNames: ["do"],
  scope: "Cluster",
  description: "A disk size and performance class that volumes refer to by name.",
  spec: Type.Object(
    {
      displayName: Type.Optional(Type.String({ maxLength: 255, description: "Human-readable name." })),
      size: Type.Optional(
        Quantity({
          description: "Disk size; leave empty for a custom-size offering (the volume gives the size).",
          min: "1Gi",
          max: "64Ti",
        }),
      ),
      iops: Type.Optional(
        Type.Object(
          {
            min: Type.Integer({ minimum: 1, maximum: 1_000_000, description: "Guaranteed IOPS." }),
            max: Type.Integer({ minimum: 1, maximum: 1_000_000, description: "IOPS limit." }),
          },
          {
            description: "IOPS limits applied to the disk.",
            "x-kubernetes-validations": [
              { rule: "self.max >= self.min", message: "iops.max must be at least iops.min" },
            ],
          },
        ),
      ),
      storageType: Type.Optional(
        StringEnum(STORAGE_TYPES, {
          description:
            "local: the host's own pool. shared: a pool every host of the zone reaches. Unset: shared where there is one, else local.",
        }),
      ),
      tags: Labels("Storage tags the pool must have."),
    },
    { description: "The offering's size and performance." },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      conditions: Conditions("Conditions of the offering."),
    },
    { description: "Observed state of the offering." },
  ),
  printerColumns: [
    { name: "Size", type: "string", jsonPath: ".spec.size", description: "Disk size (empty: custom)." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
});

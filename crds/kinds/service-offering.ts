import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { Conditions, Labels, ObservedGeneration, Quantity, StringEnum } from "../schema.ts";
import { STORAGE_TYPES } from "./storage-pool.ts";

export const ServiceOfferingKind = defineKind({
  kind: "ServiceOffering",
  plural: "serviceofferings",
  singular: "serviceoffering",
  shortNames: ["so"],
  scope: "Cluster",
  description: "A VM size: CPU, memory and placement properties that VMs refer to by name.",
  spec: Type.Object(
    {
      displayName: Type.Optional(Type.String({ maxLength: 255, description: "Human-readable name." })),
      cpu: Type.Integer({ minimum: 1, maximum: 256, description: "Virtual CPUs." }),
      cpuSpeedMHz: Type.Optional(
        Type.Integer({
          minimum: 100,
          maximum: 10_000,
          description: "CPU speed reported to the CloudStack API, in MHz.",
        }),
      ),
      memory: Quantity({ description: "Memory, e.g. 2Gi.", min: "64Mi", max: "4Ti" }),
      highAvailability: Type.Optional(
        Type.Boolean({ default: false, description: "Restart the VM on another host when its host fails." }),
      ),
      hostTags: Labels("Place VMs only on hosts that have all of these tags."),
      storageType: Type.Optional(
        StringEnum(STORAGE_TYPES, {
          description:
            "Where the ROOT volume lives. local: the host's own pool. shared: a pool every host of the zone reaches. Unset: shared where there is one, else local.",
        }),
      ),
      storageTags: Labels("Storage tags the ROOT volume's pool must have."),
    },
    { description: "The offering's resources and placement." },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      conditions: Conditions("Conditions of the offering."),
    },
    { description: "Observed state of the offering." },
  ),
  printerColumns: [
    { name: "CPU", type: "integer", jsonPath: ".spec.cpu", description: "Virtual CPUs." },
    { name: "Memory", type: "string", jsonPath: ".spec.memory", description: "Memory." },
    { name: "HA", type: "boolean", jsonPath: ".spec.highAvailability", description: "High availability." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
});

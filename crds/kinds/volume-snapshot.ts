import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import {
  AbsolutePath,
  Conditions,
  immutable,
  ObjectName,
  ObservedGeneration,
  Quantity,
  StringEnum,
} from "../schema.ts";

export const SNAPSHOT_PHASES = ["Pending", "Creating", "Ready", "Error", "Deleting"] as const;

/** The label naming the SnapshotPolicy that took a snapshot (its controller keeps N of them). */
export const SNAPSHOT_POLICY_LABEL = "stratus.io/snapshot-policy";

/**
 * Asks the agent holding a Volume to put its disk back to a snapshot: the value is
 * `<snapshot name>/<request id>`, and the Volume's status.revertedTo says when it is done.
 */
export const REVERT_ANNOTATION = "stratus.io/revert-to-snapshot";

export const VolumeSnapshotKind = defineKind({
  kind: "VolumeSnapshot",
  plural: "volumesnapshots",
  singular: "volumesnapshot",
  shortNames: ["vsnap"],
  scope: "Namespaced",
  description:
    "A point-in-time copy of a Volume's disk, kept on the zone's secondary storage so it outlives the host. A running VM's disk is copied while its guest is paused for the copy, never torn.",
  spec: Type.Object(
    {
      volume: ObjectName({
        description: "The Volume of this namespace to copy.",
        "x-kubernetes-validations": [immutable("volume")],
      }),
    },
    { description: "What to snapshot." },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      phase: Type.Optional(
        StringEnum(SNAPSHOT_PHASES, { description: "Where the snapshot is in its life." }),
      ),
      host: Type.Optional(
        ObjectName({ description: "The host whose agent takes the snapshot (the volume's host then)." }),
      ),
      zone: Type.Optional(ObjectName({ description: "The zone whose secondary storage holds it." })),
      volumeType: Type.Optional(
        StringEnum(["ROOT", "DATADISK"] as const, { description: "The type of the volume." }),
      ),
      path: Type.Optional(AbsolutePath("The snapshot's file on secondary storage.")),
      object: Type.Optional(
        Type.Object(
          {
            endpoint: Type.String({ maxLength: 2048, description: "The store's URL." }),
            bucket: Type.String({ maxLength: 63, description: "Its bucket." }),
            key: Type.String({ maxLength: 1024, description: "The object's key." }),
          },
          { description: "The snapshot's object in the zone's S3-compatible store (instead of path)." },
        ),
      ),
      sha256: Type.Optional(
        Type.String({ pattern: "^[0-9a-f]{64}$", description: "Checksum of that file." }),
      ),
      size: Type.Optional(Quantity({ description: "Bytes the file takes." })),
      virtualSize: Type.Optional(
        Quantity({ description: "The disk size a volume made from it gets at least." }),
      ),
      takenAt: Type.Optional(Type.String({ format: "date-time", description: "When the copy was taken." })),
      pausedMilliseconds: Type.Optional(
        Type.Integer({ minimum: 0, description: "How long a running guest was paused for the copy." }),
      ),
      conditions: Conditions("Ready: the copy is on secondary storage and checksummed."),
    },
    { description: "The snapshot as observed." },
  ),
  printerColumns: [
    { name: "Volume", type: "string", jsonPath: ".spec.volume", description: "The copied volume." },
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Phase." },
    { name: "Size", type: "string", jsonPath: ".status.size", description: "Bytes on secondary storage." },
    {
      name: "Host",
      type: "string",
      jsonPath: ".status.host",
      description: "Host that took it.",
      priority: 1,
    },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
  selectableFields: [".spec.volume", ".status.host"],
});

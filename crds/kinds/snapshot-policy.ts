import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { Conditions, immutable, ObjectName, ObservedGeneration, StringEnum } from "../schema.ts";

export const SNAPSHOT_INTERVALS = ["HOURLY", "DAILY", "WEEKLY", "MONTHLY"] as const;
export type SnapshotInterval = (typeof SNAPSHOT_INTERVALS)[number];

export const SnapshotPolicyKind = defineKind({
  kind: "SnapshotPolicy",
  plural: "snapshotpolicies",
  singular: "snapshotpolicy",
  shortNames: ["snappol"],
  scope: "Namespaced",
  description:
    "Recurring snapshots of a Volume, as CloudStack's snapshot policies: one VolumeSnapshot per slot of the schedule (never two), keeping the newest maxSnapshots.",
  spec: Type.Object(
    {
      volume: ObjectName({
        description: "The Volume of this namespace to snapshot.",
        "x-kubernetes-validations": [immutable("volume")],
      }),
      intervalType: StringEnum(SNAPSHOT_INTERVALS, { description: "How often." }),
      schedule: Type.String({
        maxLength: 8,
        description:
          "CloudStack's schedule: HOURLY 'MM' (minute), DAILY 'MM:HH', WEEKLY 'MM:HH:D' (1 = Sunday), MONTHLY 'MM:HH:DD'.",
      }),
      timezone: Type.Optional(
        Type.String({
          maxLength: 64,
          pattern: "^[A-Za-z0-9_+\\-/]+$",
          default: "UTC",
          description: "IANA time zone the schedule is read in, e.g. Europe/Berlin.",
        }),
      ),
      maxSnapshots: Type.Integer({
        minimum: 1,
        maximum: 100,
        description: "How many of its snapshots to keep.",
      }),
    },
    {
      description: "What to snapshot and when.",
      "x-kubernetes-validations": [
        {
          rule: "self.intervalType != 'HOURLY' || self.schedule.matches('^[0-5]?[0-9]$')",
          message: "an HOURLY schedule is the minute, 0-59",
        },
        {
          rule: "self.intervalType != 'DAILY' || self.schedule.matches('^[0-5]?[0-9]:([01]?[0-9]|2[0-3])$')",
          message: "a DAILY schedule is MM:HH",
        },
        {
          rule: "self.intervalType != 'WEEKLY' || self.schedule.matches('^[0-5]?[0-9]:([01]?[0-9]|2[0-3]):[1-7]$')",
          message: "a WEEKLY schedule is MM:HH:D with D 1 (Sunday) to 7",
        },
        {
          rule: "self.intervalType != 'MONTHLY' || self.schedule.matches('^[0-5]?[0-9]:([01]?[0-9]|2[0-3]):([1-9]|[12][0-9]|3[01])$')",
          message: "a MONTHLY schedule is MM:HH:DD with DD 1 to 31",
        },
      ],
    },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      lastSlot: Type.Optional(
        Type.String({ format: "date-time", description: "The latest slot a snapshot was taken for." }),
      ),
      nextSlot: Type.Optional(Type.String({ format: "date-time", description: "When the next one is due." })),
      snapshots: Type.Optional(Type.Integer({ minimum: 0, description: "Its snapshots that exist now." })),
      conditions: Conditions("Ready: the schedule is valid and the volume exists."),
    },
    { description: "The policy as its controller runs it." },
  ),
  validations: [
    {
      // The name is the label value on its snapshots, and label values have at most 63 characters.
      rule: "self.metadata.name.size() <= 63",
      message: "a snapshot policy's name has at most 63 characters (it labels its snapshots)",
    },
  ],
  printerColumns: [
    { name: "Volume", type: "string", jsonPath: ".spec.volume", description: "The volume." },
    { name: "Interval", type: "string", jsonPath: ".spec.intervalType", description: "How often." },
    { name: "Keep", type: "integer", jsonPath: ".spec.maxSnapshots", description: "How many are kept." },
    { name: "Next", type: "string", jsonPath: ".status.nextSlot", description: "Next slot." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
});

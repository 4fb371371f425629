import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { AbsolutePath, immutable, ObjectName, StringEnum } from "../schema.ts";

export const MIGRATION_PHASES = [
  "Pending",
  "Scheduling",
  "Running",
  "Succeeded",
  "Failed",
  "Cancelled",
] as const;
export type MigrationPhase = (typeof MIGRATION_PHASES)[number];
/** What the source host's agent reports of the transfer it drives. */
export const TRANSFER_STATES = ["Running", "Completed", "Failed", "Cancelled"] as const;
export type TransferState = (typeof TRANSFER_STATES)[number];

/** Held by compute while a migration may still move the VM; removed once the phase is final. */
export const MIGRATION_FINALIZER = "stratus.io/migration";

const Bytes = (description: string) => Type.Optional(Type.Integer({ minimum: 0, description }));
const Timestamp = (description: string) => Type.Optional(Type.String({ format: "date-time", description }));

export const VirtualMachineMigrationKind = defineKind({
  kind: "VirtualMachineMigration",
  plural: "virtualmachinemigrations",
  singular: "virtualmachinemigration",
  shortNames: ["vmim"],
  scope: "Namespaced",
  description:
    "Moves a running VM to another host while it runs (live migration), as KubeVirt's VirtualMachineInstanceMigration. Only VMs whose volumes are all on shared pools move; deleting the object while it runs cancels the move.",
  spec: Type.Object(
    {
      vm: ObjectName({
        description: "The VirtualMachine of this namespace to move.",
        "x-kubernetes-validations": [immutable("vm")],
      }),
      targetHost: Type.Optional(
        ObjectName({
          description: "The host to move it to; chosen by the scheduler's filters when not given.",
          "x-kubernetes-validations": [immutable("targetHost")],
        }),
      ),
    },
    { description: "What to move, and where." },
  ),
  status: Type.Object(
    {
      phase: Type.Optional(
        StringEnum(MIGRATION_PHASES, {
          description:
            "Pending (waiting for a slot), Scheduling (target chosen, the source starts it), Running, Succeeded, Failed, Cancelled. Written by compute.",
        }),
      ),
      sourceHost: Type.Optional(ObjectName({ description: "The host the VM runs on when the move starts." })),
      targetHost: Type.Optional(ObjectName({ description: "The host it moves to." })),
      reason: Type.Optional(Type.String({ maxLength: 64, description: "Why the phase is what it is." })),
      message: Type.Optional(Type.String({ maxLength: 1024, description: "The same, for people." })),
      scheduledAt: Timestamp("When compute chose the target."),
      completedAt: Timestamp("When the migration reached a final phase."),
      targetPrepared: Type.Optional(
        Type.Object(
          {
            preparedAt: Type.String({ format: "date-time", description: "When the target was ready." }),
            consoleSocket: Type.Optional(AbsolutePath("Where the target serves the guest's serial console.")),
            configDrive: Type.Optional(
              AbsolutePath(
                "The guest's config drive, built anew on the target (as CloudStack does); absent: the guest's CD-ROM arrives empty and the target builds the drive at its next boot.",
              ),
            ),
            iso: Type.Optional(
              AbsolutePath(
                "The disc of the guest's ISO drive (spec.iso), copied into the target's cache first.",
              ),
            ),
          },
          {
            description:
              "The target host's agent made the VM's networks there and is ready to take the guest (field manager stratus-host-agent-migration-target).",
          },
        ),
      ),
      transfer: Type.Optional(
        Type.Object(
          {
            state: StringEnum(TRANSFER_STATES, { description: "The transfer as the source agent sees it." }),
            startedAt: Timestamp("When the source agent started it."),
            finishedAt: Timestamp("When it ended."),
            message: Type.Optional(
              Type.String({ maxLength: 1024, description: "libvirt's word on a failure." }),
            ),
            totalBytes: Bytes("Memory (and data) to move, as libvirt's job reports it."),
            processedBytes: Bytes("Moved so far."),
            remainingBytes: Bytes("Left to move."),
            percent: Type.Optional(
              Type.Integer({ minimum: 0, maximum: 100, description: "processed of total." }),
            ),
            durationMilliseconds: Bytes("How long the transfer took."),
            downtimeMilliseconds: Bytes(
              "How long the guest was paused for the switch to the target (libvirt's job statistics).",
            ),
          },
          { description: "Written by the source host's agent (field manager stratus-host-agent-migration)." },
        ),
      ),
    },
    { description: "The migration as compute and the source agent observe it." },
  ),
  printerColumns: [
    { name: "VM", type: "string", jsonPath: ".spec.vm", description: "The VM." },
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Phase." },
    { name: "Source", type: "string", jsonPath: ".status.sourceHost", description: "From." },
    { name: "Target", type: "string", jsonPath: ".status.targetHost", description: "To." },
    {
      name: "Progress",
      type: "integer",
      jsonPath: ".status.transfer.percent",
      description: "Percent moved.",
    },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
  selectableFields: [".spec.vm", ".status.sourceHost", ".status.targetHost"],
});

export const isFinalMigrationPhase = (phase: MigrationPhase | undefined): boolean =>
  phase === "Succeeded" || phase === "Failed" || phase === "Cancelled";

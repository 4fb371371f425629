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
import { POOL_TYPES } from "./storage-pool.ts";

/** A template that boots a kernel directly has no root disk unless the VM asks for a size. */
export function needsRootVolume(
  vm: { spec: { rootDisk?: { size?: string } } },
  template: { spec: { source: { directBoot?: unknown } } },
): boolean {
  return !template.spec.source.directBoot || vm.spec.rootDisk?.size !== undefined;
}

/** The ROOT Volume the compute controller creates for a VM is named after the VM. */
export function rootVolumeName(vm: string): string {
  return `${vm}-root`;
}

export const VOLUME_PHASES = [
  "Pending",
  "Creating",
  "Ready",
  "Attached",
  "Resizing",
  "Error",
  "Deleting",
] as const;

export const VolumeKind = defineKind({
  kind: "Volume",
  plural: "volumes",
  singular: "volume",
  shortNames: ["vol"],
  scope: "Namespaced",
  description:
    "A disk: blank or created from a template. It lives in a StoragePool its VM's host reaches; when the VM moves to a host that cannot reach it, its bytes are copied there first.",
  spec: Type.Object(
    {
      displayName: Type.Optional(Type.String({ maxLength: 255, description: "Human-readable name." })),
      zone: ObjectName({
        description: "The zone the volume lives in.",
        "x-kubernetes-validations": [immutable("zone")],
      }),
      type: Type.Optional(
        StringEnum(["ROOT", "DATADISK"] as const, {
          default: "DATADISK",
          description: "ROOT disks are created by the compute controller for a VM; users create DATADISKs.",
          "x-kubernetes-validations": [immutable("type")],
        }),
      ),
      size: Type.Optional(
        Quantity({
          description: "Size of the disk. It may grow but never shrink.",
          min: "1Gi",
          max: "64Ti",
          "x-kubernetes-validations": [
            {
              rule: "!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0",
              message: "a volume can grow but never shrink",
            },
          ],
        }),
      ),
      diskOffering: Type.Optional(
        ObjectName({ description: "DiskOffering that gives size and performance." }),
      ),
      pool: Type.Optional(
        ObjectName({
          description:
            "The StoragePool the disk should be in (as CloudStack's migrateVolume). Empty: wherever its VM's host reaches. The disk is copied there, verified, and only then removed from its old pool; a VM using it stays stopped meanwhile.",
        }),
      ),
      source: Type.Optional(
        Type.Object(
          {
            template: Type.Optional(ObjectName({ description: "Create the disk from this Template." })),
            snapshot: Type.Optional(
              ObjectName({
                description:
                  "Create the disk from this VolumeSnapshot of the namespace (a copy of its bytes).",
              }),
            ),
          },
          {
            description: "Where the disk's content comes from; empty means a blank disk.",
            "x-kubernetes-validations": [
              immutable("source"),
              {
                rule: "!(has(self.template) && has(self.snapshot))",
                message: "a volume comes from a template or a snapshot, not both",
              },
            ],
          },
        ),
      ),
    },
    {
      description: "What the volume should be.",
      "x-kubernetes-validations": [
        {
          rule: "has(self.size) || has(self.diskOffering)",
          message: "a volume needs a size or a diskOffering",
        },
        {
          rule: "!has(oldSelf.size) || has(self.size)",
          message: "size cannot be removed once set",
          fieldPath: ".size",
        },
      ],
    },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      phase: Type.Optional(StringEnum(VOLUME_PHASES, { description: "Where the volume is in its life." })),
      host: Type.Optional(ObjectName({ description: "Host whose pool holds the disk." })),
      releasedTo: Type.Optional(
        ObjectName({
          description:
            "The host a disk in a shared pool is released to, set by the storage controller when the disk's VM runs there: only that host's agent may take the disk (status.host) from its holder.",
        }),
      ),
      pool: Type.Optional(ObjectName({ description: "The StoragePool holding the disk." })),
      poolType: Type.Optional(StringEnum(POOL_TYPES, { description: "The type of that pool." })),
      path: Type.Optional(
        Type.String({ maxLength: 4096, description: "Path of the disk file on the host." }),
      ),
      capacity: Type.Optional(Quantity({ description: "Size of the disk as created." })),
      admittedSize: Type.Optional(
        Quantity({
          description:
            "The size the account's primary-storage limit granted, set by the storage controller: a host makes or grows the disk only up to it.",
        }),
      ),
      attachedTo: Type.Optional(
        Type.Object(
          {
            virtualMachine: ObjectName({ description: "The VM the volume is attached to." }),
            device: Type.String({ maxLength: 16, description: "Guest device, e.g. vdb." }),
          },
          { description: "Where the volume is attached." },
        ),
      ),
      revertedTo: Type.Optional(
        Type.String({
          maxLength: 512,
          description:
            "The last revert request (stratus.io/revert-to-snapshot) the holding agent carried out.",
        }),
      ),
      transfer: Type.Optional(
        Type.Object(
          {
            target: Type.Optional(
              Type.Object(
                {
                  pool: ObjectName({ description: "The pool the disk moves to." }),
                  host: ObjectName({ description: "The host whose agent copies it in." }),
                },
                { description: "Where the disk must go, set by the storage controller." },
              ),
            ),
            exported: Type.Optional(
              Type.Object(
                {
                  path: AbsolutePath("The staged copy on the zone's secondary storage."),
                  sha256: Type.String({
                    pattern: "^[0-9a-f]{64}$",
                    description: "Checksum of the staged copy.",
                  }),
                  bytes: Type.Integer({ minimum: 0, description: "Size of the staged copy." }),
                },
                { description: "The holding agent's staged copy of the stopped disk." },
              ),
            ),
            received: Type.Optional(
              Type.Object(
                {
                  pool: ObjectName({ description: "The pool the copy is in." }),
                  host: ObjectName({ description: "The agent that made it." }),
                  path: AbsolutePath("The new disk file."),
                  sha256: Type.String({
                    pattern: "^[0-9a-f]{64}$",
                    description: "Checksum it was verified against.",
                  }),
                  pending: Type.Optional(
                    Type.Boolean({
                      description:
                        "The copy is being made: written before the first byte, so a copy is never made without a record of it.",
                    }),
                  ),
                },
                { description: "The target agent's verified copy; the old disk is removed only after this." },
              ),
            ),
          },
          { description: "A move of the disk between pools that its VM's host cannot both reach." },
        ),
      ),
      conditions: Conditions(
        "Ready: the disk exists. Attached: it is attached to its VM. InUse: a VM uses it. Admitted: the account's primary-storage limit granted its size.",
      ),
    },
    { description: "The volume as observed." },
  ),
  printerColumns: [
    { name: "Type", type: "string", jsonPath: ".spec.type", description: "ROOT or DATADISK." },
    { name: "Size", type: "string", jsonPath: ".spec.size", description: "Requested size." },
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Phase." },
    {
      name: "VM",
      type: "string",
      jsonPath: ".status.attachedTo.virtualMachine",
      description: "Attached VM.",
    },
    { name: "Pool", type: "string", jsonPath: ".status.pool", description: "StoragePool holding the disk." },
    { name: "Host", type: "string", jsonPath: ".status.host", description: "Host that uses the disk." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
  selectableFields: [".status.host", ".status.transfer.target.host", ".status.releasedTo"],
});

import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import {
  AbsolutePath,
  Conditions,
  immutable,
  Labels,
  ObjectName,
  ObservedGeneration,
  Quantity,
  StringEnum,
} from "../schema.ts";

/** CloudStack's primary storage types Stratus drives. */
export const POOL_TYPES = ["local", "sharedMountPoint", "nfs"] as const;
export type PoolType = (typeof POOL_TYPES)[number];

/** Where a volume may live, as disk and service offerings ask for it (CloudStack's `storagetype`). */
export const STORAGE_TYPES = ["local", "shared"] as const;
export type StorageType = (typeof STORAGE_TYPES)[number];

export const isSharedPoolType = (type: PoolType): boolean => type !== "local";

/** The local pool the storage controller makes for each host. */
export function localPoolName(host: string): string {
  return `local-${host}`;
}

export const StoragePoolKind = defineKind({
  kind: "StoragePool",
  plural: "storagepools",
  singular: "storagepool",
  shortNames: ["pool"],
  scope: "Cluster",
  description:
    "Primary storage: where volumes live. local pools (one per host) are made by the storage controller; administrators add sharedMountPoint and nfs pools, reachable from every host of their zone.",
  spec: Type.Object(
    {
      zone: ObjectName({
        description: "The zone whose hosts reach the pool.",
        "x-kubernetes-validations": [immutable("zone")],
      }),
      type: StringEnum(POOL_TYPES, {
        description:
          "local: a directory on one host. sharedMountPoint: a path mounted at the same place on every host of the zone. nfs: an NFS export every host mounts (libvirt netfs).",
        "x-kubernetes-validations": [immutable("type")],
      }),
      host: Type.Optional(
        ObjectName({
          description: "The host of a local pool.",
          "x-kubernetes-validations": [immutable("host")],
        }),
      ),
      path: Type.Optional(
        AbsolutePath(
          "sharedMountPoint: the mount point on every host. nfs: where hosts mount the export. local: set by the storage controller from the host's agent.",
        ),
      ),
      nfs: Type.Optional(
        Type.Object(
          {
            server: Type.String({
              minLength: 1,
              maxLength: 253,
              pattern: "^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$",
              description: "NFS server name or IPv4 address.",
            }),
            exportPath: AbsolutePath("The exported directory on the server."),
          },
          { description: "The NFS export of an nfs pool." },
        ),
      ),
      tags: Labels("Storage tags; offerings that ask for tags get pools that have all of them."),
      maintenance: Type.Optional(
        Type.Boolean({
          default: false,
          description:
            "true: no new volumes are created in the pool; the volumes in it stay and keep working.",
        }),
      ),
    },
    {
      description: "What the administrator wants of the pool.",
      "x-kubernetes-validations": [
        { rule: "self.type != 'local' || has(self.host)", message: "a local pool names its host" },
        { rule: "self.type == 'local' || !has(self.host)", message: "only a local pool names a host" },
        {
          rule: "self.type != 'sharedMountPoint' || has(self.path)",
          message: "a sharedMountPoint pool needs the path it is mounted at",
        },
        {
          rule: "self.type != 'nfs' || (has(self.nfs) && has(self.path))",
          message: "an nfs pool needs nfs.server, nfs.exportPath and the path hosts mount it at",
        },
        { rule: "self.type == 'nfs' || !has(self.nfs)", message: "only an nfs pool has an nfs export" },
      ],
    },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      capacity: Type.Optional(Quantity({ description: "Size of the pool as its hosts see it." })),
      available: Type.Optional(Quantity({ description: "Free space as its hosts see it." })),
      allocated: Type.Optional(
        Quantity({ description: "Sum of the sizes of the volumes in the pool (what placement counts)." }),
      ),
      volumes: Type.Optional(Type.Integer({ minimum: 0, description: "Volumes whose disk is in the pool." })),
      hosts: Type.Optional(
        Type.Object(
          {
            total: Type.Integer({ minimum: 0, description: "Hosts that should reach the pool." }),
            ready: Type.Integer({ minimum: 0, description: "Hosts whose agent reports the pool usable." }),
          },
          { description: "How many hosts reach the pool." },
        ),
      ),
      conditions: Conditions("Ready: every host that should reach the pool reports it usable."),
    },
    { description: "The pool as the storage controller rolls it up from its hosts and volumes." },
  ),
  printerColumns: [
    { name: "Type", type: "string", jsonPath: ".spec.type", description: "Pool type." },
    { name: "Zone", type: "string", jsonPath: ".spec.zone", description: "Zone." },
    { name: "Host", type: "string", jsonPath: ".spec.host", description: "Host of a local pool." },
    { name: "Capacity", type: "string", jsonPath: ".status.capacity", description: "Size." },
    { name: "Allocated", type: "string", jsonPath: ".status.allocated", description: "Volume sizes." },
    {
      name: "Ready",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Ready")].status',
      description: "Reachable from its hosts.",
    },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
  selectableFields: [".spec.zone"],
});

import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { Conditions, ObjectName, ObservedGeneration, Quantity, StringEnum } from "../schema.ts";

const HttpUrl = (description: string) =>
  Type.String({
    maxLength: 2048,
    description,
    "x-kubernetes-validations": [
      {
        rule: "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",
        message: "must be an http:// or https:// URL",
      },
    ],
  });

/** Direct-boot files may also sit on every host already (the local cloud's tiny guest does). */
const HttpUrlOrPath = (description: string) =>
  Type.String({
    maxLength: 4096,
    description: `${description} An http(s) URL, or an absolute path on the host.`,
    "x-kubernetes-validations": [
      {
        rule: "self.startsWith('/') || (isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != '')",
        message: "must be an http:// or https:// URL, or an absolute path on the host",
      },
    ],
  });

const AbsolutePath = (description: string) =>
  Type.String({
    maxLength: 4096,
    pattern: "^/",
    description: `${description} An absolute path on the host.`,
  });

/** A namespaced object the template is made from (only administrators create templates). */
const ObjectRef = (description: string) =>
  Type.Object(
    {
      namespace: ObjectName({ description: "Its namespace (the account)." }),
      name: ObjectName({ description: "Its name." }),
    },
    { description },
  );

export const TemplateKind = defineKind({
  kind: "Template",
  plural: "templates",
  singular: "template",
  shortNames: ["tmpl"],
  scope: "Cluster",
  description: "A bootable image VMs are created from. Host agents download it once and cache it.",
  spec: Type.Object(
    {
      displayName: Type.Optional(Type.String({ maxLength: 255, description: "Human-readable name." })),
      source: Type.Object(
        {
          url: Type.Optional(HttpUrl("Where to download the image.")),
          hostPath: Type.Optional(AbsolutePath("An image already present on every host.")),
          volume: Type.Optional(
            ObjectRef("A volume whose disk (a stopped VM's or a detached one) becomes the image."),
          ),
          snapshot: Type.Optional(ObjectRef("A VolumeSnapshot whose copy becomes the image.")),
          directBoot: Type.Optional(
            Type.Object(
              {
                kernel: HttpUrlOrPath("The kernel."),
                initrd: HttpUrlOrPath("The initial RAM disk."),
                commandLine: Type.Optional(
                  Type.String({
                    maxLength: 1024,
                    default: "console=ttyS0",
                    description: "Kernel command line.",
                  }),
                ),
              },
              { description: "Boot a kernel and initrd directly, with no disk image." },
            ),
          ),
        },
        {
          description:
            "Exactly one of url, hostPath, directBoot, volume or snapshot. A volume's or snapshot's image is flattened once onto the zone's secondary storage by the host holding it (status.image), then copied to hosts like any image.",
          "x-kubernetes-validations": [
            {
              rule: "[has(self.url), has(self.hostPath), has(self.directBoot), has(self.volume), has(self.snapshot)].filter(x, x).size() == 1",
              message: "source must set exactly one of url, hostPath, directBoot, volume or snapshot",
            },
          ],
        },
      ),
      checksum: Type.Optional(
        Type.String({
          maxLength: 71,
          pattern: "^sha256:[0-9a-f]{64}$",
          description:
            "Expected checksum of the image, sha256:<64 hex digits>; a mismatch fails the download.",
        }),
      ),
      format: Type.Optional(
        StringEnum(["qcow2", "raw"] as const, { default: "qcow2", description: "Disk image format." }),
      ),
      osType: Type.Optional(
        Type.String({
          maxLength: 255,
          default: "Other Linux (64-bit)",
          description: "Guest OS type, as CloudStack names it.",
        }),
      ),
      minimumDiskSize: Type.Optional(
        Quantity({ description: "Smallest root disk a VM from this template may have.", max: "64Ti" }),
      ),
      zones: Type.Optional(
        Type.Array(ObjectName({ description: "A zone name." }), {
          description: "Zones the template is available in; empty means every zone.",
          maxItems: 64,
          "x-kubernetes-list-type": "set",
        }),
      ),
    },
    { description: "The image and how to boot it." },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      size: Type.Optional(Quantity({ description: "Size of the downloaded image." })),
      image: Type.Optional(
        Type.Object(
          {
            zone: ObjectName({ description: "The zone whose secondary storage holds it." }),
            host: ObjectName({ description: "The host whose agent wrote it." }),
            path: Type.String({ maxLength: 4096, pattern: "^/", description: "The image file." }),
            sha256: Type.String({ pattern: "^[0-9a-f]{64}$", description: "Its checksum." }),
            bytes: Type.Integer({ minimum: 0, description: "Its size in bytes." }),
          },
          {
            description:
              "A template made from a volume or snapshot: its flattened image on secondary storage, written once by the agent holding the source.",
          },
        ),
      ),
      zones: Type.Optional(
        Type.Array(
          Type.Object(
            {
              zone: ObjectName({ description: "The zone." }),
              ready: Type.Boolean({ description: "At least one host of the zone has the image cached." }),
              hostsCached: Type.Integer({ minimum: 0, description: "Hosts that have the image cached." }),
            },
            { description: "Availability of the template in one zone." },
          ),
          {
            description: "Availability per zone.",
            maxItems: 64,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["zone"],
          },
        ),
      ),
      conditions: Conditions("Ready: the template can be used in at least one zone."),
    },
    { description: "Where the template is available." },
  ),
  printerColumns: [
    { name: "Format", type: "string", jsonPath: ".spec.format", description: "Image format." },
    { name: "OS", type: "string", jsonPath: ".spec.osType", description: "Guest OS type." },
    {
      name: "Ready",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Ready")].status',
      description: "Usable.",
    },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
});

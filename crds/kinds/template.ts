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

/** What a zone's template agent reports; the storage controller's choice of host stays its own. */
export const ZONE_IMAGE_STATES = ["Downloading", "Ready", "Error", "Removed"] as const;
export type ZoneImageState = (typeof ZONE_IMAGE_STATES)[number];

const ZoneImage = Type.Object(
  {
    zone: ObjectName({ description: "The zone." }),
    host: Type.Optional(
      ObjectName({
        description:
          "The host whose agent downloads the image to the zone's secondary storage, or removes it (the storage controller's choice: a Ready host of the zone).",
      }),
    ),
    remove: Type.Optional(
      Type.Boolean({
        description:
          "The template is being deleted and nothing uses it: its image is removed from the zone's secondary storage.",
      }),
    ),
    state: Type.Optional(
      StringEnum(ZONE_IMAGE_STATES, {
        description:
          "Where the image is: Downloading, Ready (verified, under its final name), Error, Removed.",
      }),
    ),
    reason: Type.Optional(
      Type.String({
        maxLength: 64,
        pattern: "^[A-Za-z][A-Za-z0-9]*$",
        description: "Why an Error, for machines: DownloadFailed, ChecksumMismatch, ImageTooLarge, ...",
      }),
    ),
    message: Type.Optional(Type.String({ maxLength: 4096, description: "What happened, for people." })),
    bytes: Type.Optional(
      Type.Integer({ minimum: 0, description: "Bytes downloaded so far; the image's size once Ready." }),
    ),
    totalBytes: Type.Optional(
      Type.Integer({ minimum: 0, description: "The size the server announced, when it did." }),
    ),
    sha256: Type.Optional(
      Type.String({ pattern: "^[0-9a-f]{64}$", description: "The checksum of the image that is Ready." }),
    ),
  },
  { description: "The template's image on one zone's secondary storage." },
);

export const TemplateKind = defineKind({
  kind: "Template",
  plural: "templates",
  singular: "template",
  shortNames: ["tmpl"],
  scope: "Cluster",
  description:
    "A bootable image VMs are created from. A URL image is downloaded once per zone to its secondary storage; hosts copy it into their caches.",
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
        StringEnum(["qcow2", "raw", "iso"] as const, {
          default: "qcow2",
          description:
            "Image format. iso: a CD-ROM image (CloudStack's ISOs), put in a VM's CD-ROM drive (spec.iso); a VM whose template is one boots from it onto a blank root disk.",
        }),
      ),
      bootable: Type.Optional(
        Type.Boolean({
          description:
            "For an ISO: whether VMs may be deployed from it (CloudStack's bootable). True when unset.",
        }),
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
      passwordEnabled: Type.Optional(
        Type.Boolean({
          default: false,
          description:
            "The image sets the password it is given (cloud-init): a VM deployed from it gets a generated password, returned once by the CloudStack API.",
        }),
      ),
      zones: Type.Optional(
        Type.Array(ObjectName({ description: "A zone name." }), {
          description: "Zones the template is available in; empty means every zone.",
          maxItems: 64,
          "x-kubernetes-list-type": "set",
        }),
      ),
    },
    {
      description: "The image and how to boot it.",
      "x-kubernetes-validations": [
        {
          rule: "!has(self.format) || self.format != 'iso' || has(self.source.url) || has(self.source.hostPath)",
          message: "an ISO is downloaded from source.url or found at source.hostPath",
        },
        {
          // VMs' root disks are overlays of the image, and copies of it sit in every zone and cache.
          rule: "self.source == oldSelf.source && has(self.checksum) == has(oldSelf.checksum) && (!has(self.checksum) || self.checksum == oldSelf.checksum) && has(self.format) == has(oldSelf.format) && (!has(self.format) || self.format == oldSelf.format)",
          message:
            "a template's image (source, checksum, format) cannot be changed: disks are made from it; register a new template",
        },
      ],
    },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
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
        Type.Array(ZoneImage, {
          description:
            "A URL template's image on each zone's secondary storage: which host downloads it (the storage controller's choice) and how far it got (that host's agent).",
          maxItems: 64,
          "x-kubernetes-list-type": "map",
          "x-kubernetes-list-map-keys": ["zone"],
        }),
      ),
      conditions: Conditions(
        "Ready: the image made from a volume or snapshot is written. InUse: while the template is being deleted, whether VMs or volumes still use it.",
      ),
    },
    { description: "Where the template's image is." },
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

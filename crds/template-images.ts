// Where a template's image lives on a zone's secondary storage, shared by the storage controller,
// the host agents and the API: one name per template (its UID), so no two templates ever share a
// file and everything a template left can be found by that name.
import type { Template, Zone } from "./index.ts";

export type ZoneImage = NonNullable<NonNullable<Template["status"]>["zones"]>[number];

/**
 * The format of the template's file: an image made by qemu-img from a volume is always qcow2, and
 * an ISO is a raw image to QEMU.
 */
export function templateFileFormat(template: Template): "qcow2" | "raw" {
  const { source } = template.spec;
  if (source.volume || source.snapshot) return "qcow2";
  const format = template.spec.format ?? "qcow2";
  return format === "iso" ? "raw" : format;
}

/** Whether the template is an ISO: a disc for a VM's CD-ROM drive, not a disk image. */
export const isIso = (template: Pick<Template, "spec">) => template.spec.format === "iso";

/** The template's image on the secondary storage mounted at `secondary`. */
export function secondaryImagePath(secondary: string, template: Template): string {
  return `${secondary}/templates/${template.metadata.uid}.${templateFileFormat(template)}`;
}

/** Every file of a template in a directory (image, unfinished downloads) starts with this. */
export const templateFilePrefix = (uid: string) => `${uid}.`;

/** A URL template is downloaded once per zone that has secondary storage. */
export const downloadsPerZone = (template: Template) => template.spec.source.url !== undefined;

/** Whether the template is offered in the zone (no zones listed: every zone). */
export function offeredIn(template: Template, zone: string): boolean {
  const zones = template.spec.zones ?? [];
  return zones.length === 0 || zones.includes(zone);
}

export const secondaryPathOf = (zone: Zone | undefined) => zone?.spec.secondaryStorage?.path;

export function zoneImage(template: Template, zone: string): ZoneImage | undefined {
  return template.status?.zones?.find((z) => z.zone === zone);
}

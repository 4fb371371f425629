// Pure: storage's share of a Template's zone images. A URL template is downloaded once per zone,
// onto the zone's secondary storage, by the agent of one Ready host of that zone: storage chooses
// the host (it sees every host's health; a host whose agent goes away is replaced while its work is
// unfinished) but never touches a file, since the operator need not mount secondary storage and
// every host does, as CloudStack's storage VM does. On deletion storage says when nothing uses the
// template any more (`remove`), the zone's agent removes the files, and only then is the
// template-images finalizer released.
import { TEMPLATE_IMAGES_FINALIZER } from "../../crds/finalizers.ts";
import type { Host, Template, Zone } from "../../crds/index.ts";
import { downloadsPerZone, offeredIn, secondaryPathOf, type ZoneImage } from "../../crds/template-images.ts";
import { type Condition, type ConditionInput, ownConditions } from "../../runtime/conditions.ts";
import { statusSays } from "../../runtime/objects.ts";
import { isHostReady } from "../fabric/zone-status.ts";

/** Storage's fields of one zone's entry. */
export type ZoneBinding = { zone: string; host?: string; remove?: boolean };

export interface TemplateZonesInput {
  template: Template;
  /** Every zone; those without secondary storage keep no image. */
  zones: readonly Zone[];
  hostsIn(zone: string): readonly Host[];
  /** The VMs and volumes (`namespace/name`) that name the template. */
  users: readonly string[];
  now?: Date;
}

export interface TemplateZonesDecision {
  /** Storage's whole share of the status, when it differs from what the template says. */
  status?: { zones: ZoneBinding[]; conditions?: Condition[] };
  /** A host was chosen or replaced: written with the template's resourceVersion as precondition. */
  guarded: boolean;
  /** Every zone's image is gone and nothing uses the template: the finalizer goes. */
  release: boolean;
}

/** A host whose agent can do a zone's template work now. */
const canWork = (host: Host) =>
  isHostReady(host) && !host.spec.maintenance && !host.metadata.deletionTimestamp;

/** Spreads the templates of a zone over its hosts, the same way on every run. */
function spread(key: string, count: number): number {
  let hash = 2166136261;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 16777619);
  return (hash >>> 0) % count;
}

function chooseHost(
  template: Template,
  entry: ZoneImage | undefined,
  zone: string,
  done: boolean,
  hosts: readonly Host[],
): string | undefined {
  const current = entry?.host;
  if (done) return current;
  const able = hosts.filter(canWork).map((h) => h.metadata.name as string);
  if (current && able.includes(current)) return current;
  if (able.length === 0) return current;
  able.sort();
  return able[spread(`${template.metadata.uid}/${zone}`, able.length)];
}

/** Zones whose secondary storage may hold an image of the template. */
function zonesWithImage(template: Template, withSecondary: ReadonlyMap<string, Zone>): Set<string> {
  const names = new Set((template.status?.zones ?? []).map((z) => z.zone));
  // Being deleted: a zone no host was ever given has no file of it.
  if (downloadsPerZone(template) && !template.metadata.deletionTimestamp)
    for (const name of withSecondary.keys()) if (offeredIn(template, name)) names.add(name);
  // A template made from a volume or snapshot: its one image, in its source's zone.
  const made = template.status?.image?.zone;
  if (made && template.metadata.deletionTimestamp) names.add(made);
  return names;
}

function inUse(users: readonly string[]): ConditionInput {
  if (users.length === 0)
    return {
      type: "InUse",
      status: "False",
      reason: "Unused",
      message: "Nothing uses the template; its images are removed from secondary storage.",
    };
  const named = users.slice(0, 20).join(", ");
  const more = users.length > 20 ? ` and ${users.length - 20} more` : "";
  return {
    type: "InUse",
    status: "True",
    reason: "DeletionBlocked",
    message: `Deletion waits: ${named}${more} use the template (their disks are made from its image).`,
  };
}

export function decideTemplateZones(input: TemplateZonesInput): TemplateZonesDecision {
  const { template, users } = input;
  const deleting = template.metadata.deletionTimestamp !== undefined;
  const removing = deleting && users.length === 0;
  const withSecondary = new Map(
    input.zones.filter((z) => secondaryPathOf(z) !== undefined).map((z) => [z.metadata.name as string, z]),
  );
  let guarded = false;
  const zones: ZoneBinding[] = [];
  /** Zones whose storage the template's files may be on. */
  const pending: string[] = [];
  for (const zone of [...zonesWithImage(template, withSecondary)].sort()) {
    const entry = template.status?.zones?.find((z) => z.zone === zone);
    // Nothing can reach the storage of a zone that is gone (or lost its path): nothing to wait for.
    if (!withSecondary.has(zone)) {
      if (!deleting && (entry?.host || entry?.remove)) zones.push(bindingOf(entry));
      continue;
    }
    const done = removing ? entry?.state === "Removed" : entry?.state === "Ready" || deleting;
    const host = chooseHost(template, entry, zone, done, input.hostsIn(zone));
    if (host !== entry?.host) guarded = true;
    pending.push(zone);
    if (host || removing)
      zones.push({ zone, ...(host ? { host } : {}), ...(removing ? { remove: true } : {}) });
  }
  const conditions = deleting
    ? ownConditions(
        template.status?.conditions as Condition[] | undefined,
        template.metadata.generation,
        [inUse(users)],
        input.now,
      )
    : undefined;
  const status = { zones, ...(conditions ? { conditions } : {}) };
  const release =
    removing &&
    pending.every((zone) => template.status?.zones?.find((e) => e.zone === zone)?.state === "Removed") &&
    (template.metadata.finalizers ?? []).includes(TEMPLATE_IMAGES_FINALIZER);
  return {
    ...(says(template, status) ? {} : { status }),
    guarded,
    release,
  };
}

const bindingOf = (entry: ZoneImage): ZoneBinding => ({
  zone: entry.zone,
  ...(entry.host ? { host: entry.host } : {}),
  ...(entry.remove ? { remove: true } : {}),
});

/** Whether the template already shows storage's share: the same zones, hosts and removals. */
function says(template: Template, status: { zones: ZoneBinding[]; conditions?: Condition[] }): boolean {
  const current = (template.status?.zones ?? []).map(bindingOf).filter((z) => z.host || z.remove);
  const wanted = status.zones;
  const key = (z: ZoneBinding) => `${z.zone}|${z.host ?? ""}|${z.remove ? 1 : 0}`;
  const same =
    current.length === wanted.length && wanted.every((z) => current.some((c) => key(c) === key(z)));
  if (!same) return false;
  return (
    !status.conditions ||
    statusSays({ conditions: status.conditions }, (template.status ?? {}) as Record<string, unknown>)
  );
}

// Pure: registerTemplate's and updateTemplate's parameters in Stratus's terms, refused the way
// CloudStack refuses them (431) when Stratus cannot do what they ask.
import type { Template } from "../crds/index.ts";
import { ApiError, ERROR } from "./envelope.ts";

type Lookup = (name: string) => string | undefined;

/** A template name is the object's name: a DNS label (CloudStack's free text is the display text). */
const TEMPLATE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function templateName(value: string): string {
  const name = value.toLowerCase();
  if (!TEMPLATE_NAME.test(name))
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter name value=${value}: a template name has 1 to 63 lower-case letters, digits and hyphens`,
    );
  return name;
}

/** Free text CloudStack keeps in 255-character columns. */
export function shortText(parameter: string, value: string): string {
  if (value.length > 255) throw new ApiError(ERROR.PARAM, `${parameter} is at most 255 characters`);
  return value;
}

/**
 * CloudStack's checksum forms as the Template kind's `sha256:<hex>`: `{SHA-256}<hex>` is kept; any
 * other algorithm, and a bare value (CloudStack reads it as MD5), is refused: the agents verify
 * SHA-256 only, and a checksum nobody verifies would promise what it does not do.
 */
export function templateChecksum(value: string | undefined): string | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const form = /^\{([^}]*)\}(.*)$/.exec(value.trim());
  const algorithm = form ? (form[1] ?? "").toUpperCase() : "MD5";
  const digest = (form ? (form[2] ?? "") : value.trim()).toLowerCase();
  if (algorithm !== "SHA-256" && algorithm !== "SHA256")
    throw new ApiError(
      ERROR.PARAM,
      `Checksum ${value}: ${form ? `algorithm ${algorithm}` : "a checksum without {algorithm} is MD5 and"} cannot be verified by Stratus; give {SHA-256}<64 hex digits>`,
    );
  if (!/^[0-9a-f]{64}$/.test(digest))
    throw new ApiError(
      ERROR.PARAM,
      `Checksum ${value}: a SHA-256 checksum is 64 hex digits, this one has ${digest.length} characters`,
    );
  return `sha256:${digest}`;
}

/** QCOW2 and RAW disk images; CloudStack's other formats belong to other hypervisors, or are ISOs. */
export function templateFormat(value: string): "qcow2" | "raw" {
  const format = value.toLowerCase();
  if (format === "qcow2" || format === "raw") return format;
  throw new ApiError(
    ERROR.PARAM,
    `Image format ${value} is not supported: Stratus templates are KVM disk images in QCOW2 or RAW format`,
  );
}

export function requireKvm(value: string): void {
  if (value.toUpperCase() !== "KVM")
    throw new ApiError(ERROR.PARAM, `Hypervisor ${value} is not supported: Stratus runs KVM`);
}

/**
 * The zones a registration asks for: zoneid, or zoneids, either -1 for every zone (undefined);
 * `zoneName` maps a zone's id to its name, or undefined when there is no such zone.
 */
export function registrationZones(get: Lookup, zoneName: (id: string) => string | undefined) {
  const single = get("zoneid");
  const many = (get("zoneids") ?? "")
    .split(",")
    .map((z) => z.trim())
    .filter(Boolean);
  if (single && many.length > 0)
    throw new ApiError(ERROR.PARAM, "Both zoneid and zoneids cannot be specified at the same time");
  const ids = single ? [single] : many;
  if (ids.length === 0) throw new ApiError(ERROR.PARAM, "Either zoneid or zoneids parameter is required");
  if (ids.includes("-1")) return undefined;
  return [
    ...new Set(
      ids.map((id) => {
        const name = zoneName(id);
        if (!name) throw new ApiError(ERROR.PARAM, `Unable to find zone by id ${id}`);
        return name;
      }),
    ),
  ];
}

const isTrue = (value: string | undefined) => value?.toLowerCase() === "true";
const isFalse = (value: string | undefined) => value?.toLowerCase() === "false";

/**
 * What a registration may ask that Stratus cannot do, as a refusal. Templates are cluster-wide:
 * public and featured for every account, owned by no account, never extracted.
 */
export function refuseUnsupportedRegistration(get: Lookup, names: readonly string[] = []): void {
  const refusals: [boolean, string][] = [
    // CloudStack's map form (details[0].key=...) arrives as parameters of their own.
    [names.some((name) => /^details\[/i.test(name)), "details[...]: Stratus does not keep template details"],
    [isFalse(get("requireshvm")), "requireshvm=false: KVM guests are HVM"],
    [
      get("bits") !== undefined && get("bits") !== "64",
      `bits=${get("bits")}: Stratus hosts run 64-bit guests`,
    ],
    // Every guest gets its keys through its config drive; a template cannot opt out.
    [
      isFalse(get("sshkeyenabled")),
      "sshkeyenabled=false: every guest gets its SSH keys through its config drive",
    ],
    [
      isFalse(get("ispublic")),
      "ispublic=false: Stratus templates are cluster-wide, visible to every account",
    ],
    [isFalse(get("isfeatured")), "isfeatured=false: every Stratus template is featured"],
    [isTrue(get("isextractable")), "isextractable=true: Stratus has no extractTemplate"],
    [isTrue(get("directdownload")), "directdownload=true: images are downloaded to secondary storage"],
    [isTrue(get("deployasis")), "deployasis=true: that is for VMware"],
    [isTrue(get("isrouting")), "isrouting=true: Stratus has no system VM templates"],
    [isTrue(get("isdynamicallyscalable")), "isdynamicallyscalable=true: VMs are not scaled while running"],
    [
      (get("templatetype") ?? "USER").toUpperCase() !== "USER",
      `templatetype=${get("templatetype")}: only USER templates are registered`,
    ],
    [
      Boolean(get("details") || get("externaldetails") || get("extensionid") || get("templatetag")),
      "details, externaldetails, extensionid and templatetag: Stratus does not keep them",
    ],
    [(get("arch") ?? "x86_64").toLowerCase() !== "x86_64", `arch=${get("arch")}: Stratus hosts are x86_64`],
    [
      Boolean(get("projectid") || get("account") || get("domainid")),
      "projectid, account and domainid: templates are cluster-wide, owned by no account",
    ],
  ];
  const refused = refusals.find(([asked]) => asked);
  if (refused) throw new ApiError(ERROR.PARAM, `Unsupported parameter ${refused[1]}`);
}

/**
 * updateTemplate as a merge patch of the Template's spec (undefined: nothing to change). The name
 * is the object's and the image (format) is fixed, as the Template kind keeps it.
 */
export function templateUpdate(template: Template, get: Lookup): Record<string, unknown> | undefined {
  const name = get("name");
  if (name !== undefined && name.toLowerCase() !== template.metadata.name)
    throw new ApiError(
      ERROR.PARAM,
      `A template's name cannot be changed: it is the Template object's name (${template.metadata.name}); change displaytext instead`,
    );
  const format = get("format");
  if (format !== undefined && templateFormat(format) !== (template.spec.format ?? "qcow2"))
    throw new ApiError(
      ERROR.PARAM,
      `The format of template ${template.metadata.name} cannot be changed: its image is ${(template.spec.format ?? "qcow2").toUpperCase()}; register a new template`,
    );
  if (isFalse(get("bootable"))) throw new ApiError(ERROR.PARAM, "Unsupported parameter bootable=false");
  for (const unsupported of [
    "sortkey",
    "templatetype",
    "templatetag",
    "arch",
    "isrouting",
    "isdynamicallyscalable",
    "details",
    "cleanupdetails",
  ])
    if (get(unsupported) !== undefined)
      throw new ApiError(ERROR.PARAM, `Unsupported parameter ${unsupported}: Stratus does not keep it`);
  const spec: Record<string, unknown> = {};
  const displayText = get("displaytext");
  if (displayText) spec.displayName = shortText("displaytext", displayText);
  const osType = get("ostypeid");
  if (osType) spec.osType = shortText("ostypeid", osType);
  const password = get("passwordenabled");
  if (password !== undefined) spec.passwordEnabled = isTrue(password);
  return Object.keys(spec).length > 0 ? { spec } : undefined;
}

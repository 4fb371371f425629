// Pure: CloudStack request signatures (HMAC over the sorted, encoded, lower-cased parameters), as
// ApiServer.verifyRequest computes them, plus the canonical forms real clients produce instead
// (docs/LEGACY-API.md 1.4-1.5). Comparison is constant-time; the variants tried are bounded.
import { createHmac, timingSafeEqual } from "node:crypto";

export type Params = Readonly<Record<string, string>>;

interface CanonicalForm {
  /** Leave `~` unescaped (Go, Python). */
  rawTilde: boolean;
  /** Leave `[` and `]` unescaped in values (libcloud). */
  rawBrackets: boolean;
  /** Sort names case-insensitively (libcloud lower-cases names before sorting). */
  foldedSort: boolean;
  /** Escape `*` as %2A (npm csclient). */
  escapeStar: boolean;
}

const JAVA: CanonicalForm = { rawTilde: false, rawBrackets: false, foldedSort: false, escapeStar: false };

/** The forms tried, the server's own first. */
const FORMS: readonly CanonicalForm[] = [
  JAVA,
  { ...JAVA, rawTilde: true },
  { ...JAVA, rawBrackets: true },
  { ...JAVA, foldedSort: true },
  { rawTilde: true, rawBrackets: true, foldedSort: true, escapeStar: false },
  { ...JAVA, escapeStar: true },
  { ...JAVA, rawTilde: true, escapeStar: true },
];

const hex = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`;

/** Java's URLEncoder.encode(value, "UTF-8") with "+" rewritten to "%20", in the given form. */
function encodeValue(value: string, form: CanonicalForm): string {
  // encodeURIComponent leaves A-Za-z0-9 - _ . ! ~ * ' ( ) alone; Java escapes ! ' ( ) ~ too.
  let encoded = encodeURIComponent(value).replace(/[!'()]/g, hex);
  if (!form.rawTilde) encoded = encoded.replaceAll("~", "%7E");
  if (form.escapeStar) encoded = encoded.replaceAll("*", "%2A");
  if (form.rawBrackets) encoded = encoded.replaceAll("%5B", "[").replaceAll("%5D", "]");
  return encoded;
}

/** The string that is signed: every parameter but `signature`, sorted, encoded, lower-cased. */
export function canonicalString(params: Params, form: CanonicalForm = JAVA): string {
  const names = Object.keys(params).filter((name) => name.toLowerCase() !== "signature");
  const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  names.sort(form.foldedSort ? (a, b) => byCodeUnit(a.toLowerCase(), b.toLowerCase()) : byCodeUnit);
  return names
    .map((name) => `${name}=${encodeValue(params[name] as string, form)}`)
    .join("&")
    .toLowerCase();
}

export function sign(canonical: string, secret: string, algorithm: "sha1" | "sha512" = "sha1"): string {
  return createHmac(algorithm, secret).update(canonical, "utf8").digest("base64");
}

/**
 * Whether `signature` signs `params` with `secret` in any accepted form, with HMAC-SHA1 or (newer
 * CloudMonkey) HMAC-SHA512; a signature whose "+" became a space in an unencoded GET also counts.
 */
export function verifySignature(params: Params, signature: string, secret: string): boolean {
  const candidates = new Set([signature, signature.replaceAll(" ", "+")]);
  const given = [...candidates].map((s) => Buffer.from(s, "base64")).filter((b) => b.length > 0);
  let matched = false;
  for (const form of FORMS) {
    const canonical = canonicalString(params, form);
    for (const algorithm of ["sha1", "sha512"] as const) {
      const expected = Buffer.from(sign(canonical, secret, algorithm), "base64");
      for (const candidate of given) {
        // Every variant is computed and compared: the time taken does not depend on which matched.
        if (candidate.length === expected.length && timingSafeEqual(candidate, expected)) matched = true;
      }
    }
  }
  return matched;
}

/**
 * `expires` as CloudStack's DateUtil.parseTZDateString reads it: ISO-8601 with Z, ±hh:mm or ±hhmm,
 * optional fractional seconds. Undefined when it does not parse.
 */
export function parseExpires(value: string): Date | undefined {
  const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d{1,9})?(?:'Z')?(Z|[+-]\d{2}:?\d{2})?$/.exec(
    value.trim(),
  );
  if (!match) return undefined;
  const [, date, time, fraction = "", zone = "Z"] = match;
  const offset = zone === "Z" ? "Z" : `${zone.slice(0, 3)}:${zone.slice(-2)}`;
  const parsed = new Date(`${date}T${time}${fraction.slice(0, 4)}${offset}`);
  return Number.isNaN(parsed.getTime()) ? undefined : parsed;
}

// Pure: CloudStack request signatures (HMAC over the sorted, encoded, lower-cased parameters), as
// ApiServer.verifyRequest computes them, plus the canonical forms real clients produce instead
// (docs/LEGACY-API.md 1.4-1.5). Comparison is constant-time; the work per request is bounded.
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

/**
 * What each byte of a name or value becomes in a form's canonical string: itself lower-cased when
 * left raw (the canonical string is lower-cased whole), else 0 for a %xx escape. Java's
 * URLEncoder leaves A-Z a-z 0-9 . - * _ raw and escapes the rest of the UTF-8 bytes.
 */
function rawBytes(form: CanonicalForm, name: boolean): Uint8Array {
  const raw = new Uint8Array(256);
  for (const c of "abcdefghijklmnopqrstuvwxyz0123456789.-*_") raw[c.charCodeAt(0)] = c.charCodeAt(0);
  for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZ") raw[c.charCodeAt(0)] = c.toLowerCase().charCodeAt(0);
  if (form.escapeStar && !name) raw[0x2a] = 0;
  if (form.rawTilde && !name) raw[0x7e] = 0x7e;
  // Names keep `[` `]` raw: every client signs map parameters (`tags[0].key`) so.
  if (form.rawBrackets || name) for (const c of [0x5b, 0x5d]) raw[c] = c;
  return raw;
}

const HEX = Buffer.from("0123456789abcdef");

function encodeInto(out: Buffer, at: number, text: Buffer, raw: Uint8Array): number {
  let position = at;
  for (let i = 0; i < text.length; i++) {
    const byte = text[i] as number;
    const kept = raw[byte] as number;
    if (kept) out[position++] = kept;
    else {
      out[position++] = 0x25;
      out[position++] = HEX[byte >> 4] as number;
      out[position++] = HEX[byte & 15] as number;
    }
  }
  return position;
}

const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const byFoldedCodeUnit = (a: string, b: string) => byCodeUnit(a.toLowerCase(), b.toLowerCase());

/** The signed parameters (all but `signature`) as UTF-8, in the server's (code-unit) order. */
interface Signed {
  names: string[];
  bytes: Map<string, { name: Buffer; value: Buffer }>;
}

function signedParams(params: Params): Signed {
  const names = Object.keys(params)
    .filter((name) => name.toLowerCase() !== "signature")
    .sort(byCodeUnit);
  const bytes = new Map(
    names.map((name) => [name, { name: Buffer.from(name), value: Buffer.from(params[name] as string) }]),
  );
  return { names, bytes };
}

/**
 * One form's canonical string, in one pass over the bytes. Names are encoded like values, so `=`
 * and `&` inside a name cannot pose as separators: ApiServer signs names raw, which lets
 * `response%3Djson%26signatureVersion=3` sign as `response=json&signatureVersion=3`.
 */
function canonicalBytes({ names, bytes }: Signed, form: CanonicalForm): Buffer {
  const ordered = form.foldedSort ? [...names].sort(byFoldedCodeUnit) : names;
  let size = 0;
  for (const entry of bytes.values()) size += 3 * (entry.name.length + entry.value.length) + 2;
  const out = Buffer.allocUnsafe(size);
  const nameRaw = rawBytes(form, true);
  const valueRaw = rawBytes(form, false);
  let at = 0;
  for (const [i, raw] of ordered.entries()) {
    const entry = bytes.get(raw) as { name: Buffer; value: Buffer };
    if (i > 0) out[at++] = 0x26;
    at = encodeInto(out, at, entry.name, nameRaw);
    out[at++] = 0x3d;
    at = encodeInto(out, at, entry.value, valueRaw);
  }
  return out.subarray(0, at);
}

/** The string that is signed: every parameter but `signature`, sorted, encoded, lower-cased. */
export function canonicalString(params: Params, form: CanonicalForm = JAVA): string {
  return canonicalBytes(signedParams(params), form).toString("latin1");
}

/**
 * The distinct canonical strings of `params` over the accepted forms: a form whose difference
 * from another cannot show in this request (no `~` in any value, say) is not computed again.
 */
export function canonicalStrings(params: Params): Buffer[] {
  const signed = signedParams(params);
  const values = [...signed.bytes.values()].map((e) => e.value);
  const present = {
    rawTilde: values.some((v) => v.includes(0x7e)),
    rawBrackets: values.some((v) => v.includes(0x5b) || v.includes(0x5d)),
    foldedSort: [...signed.names].sort(byFoldedCodeUnit).some((name, i) => name !== signed.names[i]),
    escapeStar: values.some((v) => v.includes(0x2a)),
  };
  const distinct = new Map<string, CanonicalForm>();
  for (const form of FORMS) {
    const effective: CanonicalForm = {
      rawTilde: form.rawTilde && present.rawTilde,
      rawBrackets: form.rawBrackets && present.rawBrackets,
      foldedSort: form.foldedSort && present.foldedSort,
      escapeStar: form.escapeStar && present.escapeStar,
    };
    distinct.set(JSON.stringify(effective), effective);
  }
  return [...distinct.values()].map((form) => canonicalBytes(signed, form));
}

export type Algorithm = "sha1" | "sha512";

export function sign(canonical: string | Buffer, secret: string, algorithm: Algorithm = "sha1"): string {
  return createHmac(algorithm, secret).update(canonical).digest("base64");
}

/** Decoded lengths of the accepted HMACs: the signature's own length says which one was used. */
const ALGORITHM_BY_LENGTH = new Map<number, Algorithm>([
  [20, "sha1"],
  [64, "sha512"],
]);

/** Base64 of the longer HMAC (SHA-512's 64 bytes) is 88 characters. */
const MAX_SIGNATURE_LENGTH = 88;

/**
 * Whether `signature` signs `params` with `secret` in any accepted form, with HMAC-SHA1 or (newer
 * CloudMonkey) HMAC-SHA512; a signature whose "+" became a space in an unencoded GET also counts.
 * The work is bounded: a signature of neither length costs no HMAC, and each distinct canonical
 * string costs one, with the algorithm its length names. `hmac` is a seam for counting that work.
 */
export function verifySignature(
  params: Params,
  signature: string,
  secret: string,
  hmac: typeof sign = sign,
): boolean {
  if (signature.length > MAX_SIGNATURE_LENGTH) return false;
  const candidates = [...new Set([signature, signature.replaceAll(" ", "+")])]
    .map((s) => Buffer.from(s, "base64"))
    .filter((b) => ALGORITHM_BY_LENGTH.has(b.length));
  if (candidates.length === 0) return false;
  for (const canonical of canonicalStrings(params)) {
    const computed = new Map<Algorithm, Buffer>();
    for (const candidate of candidates) {
      const algorithm = ALGORITHM_BY_LENGTH.get(candidate.length) as Algorithm;
      let expected = computed.get(algorithm);
      if (!expected) {
        expected = Buffer.from(hmac(canonical, secret, algorithm), "base64");
        computed.set(algorithm, expected);
      }
      // Which form matched is no secret (the request shows it); the bytes compare in constant time.
      if (timingSafeEqual(candidate, expected)) return true;
    }
  }
  return false;
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

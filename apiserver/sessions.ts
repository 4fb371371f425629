// Pure: CloudStack login sessions. A session key is the account's Secret name, when it was issued
// and when it expires, signed with a key every replica shares (a Secret), so any replica reads
// any session without a lookup. Revoking one before it expires needs shared state: see
// session-revocations.ts. Clients present the key twice, as the `sessionkey` parameter and the
// cookie, as CloudStack's default `api.sessionkey.check.locations=CookieAndParameter` wants.
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** How long a session lasts, as CloudStack's default session timeout. */
export const SESSION_SECONDS = 1800;
/** The shortest signing key accepted: an empty or short one would let anyone forge sessions. */
export const MIN_SIGNING_KEY_BYTES = 32;
/** Longer than any key issueSession makes (about 200 characters). */
const MAX_SESSION_KEY_LENGTH = 1024;

export interface Session {
  /** Name of the API key Secret of the account that logged in. */
  keySecret: string;
  issuedAt: number;
  expiresAt: number;
  /** Names this session in revocation records (a hash: the records hold no usable key). */
  id: string;
}

const mac = (payload: string, key: Buffer) => createHmac("sha256", key).update(payload).digest("base64url");

export function sessionId(sessionKey: string): string {
  return createHash("sha256").update(sessionKey).digest("hex").slice(0, 32);
}

export function assertSigningKey(key: Buffer): void {
  if (key.length < MIN_SIGNING_KEY_BYTES)
    throw new Error(
      `the session signing key has ${key.length} bytes, fewer than ${MIN_SIGNING_KEY_BYTES}: sessions could be forged`,
    );
}

export function issueSession(keySecret: string, key: Buffer, now = Date.now()): string {
  assertSigningKey(key);
  const payload = Buffer.from(
    JSON.stringify({
      s: keySecret,
      i: now,
      e: now + SESSION_SECONDS * 1000,
      n: randomBytes(16).toString("base64url"),
    }),
  ).toString("base64url");
  return `${payload}.${mac(payload, key)}`;
}

/** The session a key stands for, or undefined when it is empty, forged, damaged or expired. */
export function readSession(sessionKey: string, key: Buffer, now = Date.now()): Session | undefined {
  if (key.length < MIN_SIGNING_KEY_BYTES) return undefined;
  if (sessionKey.length === 0 || sessionKey.length > MAX_SESSION_KEY_LENGTH) return undefined;
  const [payload = "", signature = ""] = sessionKey.split(".");
  const expected = Buffer.from(mac(payload, key));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  try {
    const { s, i, e } = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as {
      s?: unknown;
      i?: unknown;
      e?: unknown;
    };
    if (typeof s !== "string" || typeof e !== "number" || e <= now) return undefined;
    const issuedAt = typeof i === "number" ? i : e - SESSION_SECONDS * 1000;
    return { keySecret: s, issuedAt, expiresAt: e, id: sessionId(sessionKey) };
  } catch {
    return undefined;
  }
}

/** Constant-time password check. */
export function passwordMatches(given: string, expected: string): boolean {
  const a = createHmac("sha256", "password").update(given).digest();
  const b = createHmac("sha256", "password").update(expected).digest();
  return timingSafeEqual(a, b) && expected.length > 0;
}

/** Every `sessionkey` cookie of a Cookie header (a sibling site may have set one too). */
export function sessionCookies(cookieHeader: string | undefined): string[] {
  const values: string[] = [];
  for (const part of (cookieHeader ?? "").split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name !== "sessionkey") continue;
    try {
      values.push(decodeURIComponent(value.join("=")));
    } catch {
      // A malformed escape is no session key.
    }
  }
  return values;
}

/**
 * The cookies login sets: HttpOnly (no script reads them), SameSite=Strict (no other site's page
 * sends them), Secure when the client reached us over TLS. `sessionKey` undefined clears them.
 */
export function sessionCookieHeaders(sessionKey: string | undefined, options: { secure: boolean }): string[] {
  const attributes = `Path=/client; HttpOnly; SameSite=Strict${options.secure ? "; Secure" : ""}`;
  if (sessionKey === undefined)
    return [`sessionkey=; ${attributes}; Max-Age=0`, `JSESSIONID=; ${attributes}; Max-Age=0`];
  return [
    `sessionkey=${sessionKey}; ${attributes}; Max-Age=${SESSION_SECONDS}`,
    `JSESSIONID=${randomBytes(16).toString("hex")}; ${attributes}`,
  ];
}

// Pure: CloudStack login sessions without server-side state, so any replica accepts any session.
// The session key is the account's Secret name and an expiry, signed with a key every replica
// shares (a Secret); CloudMonkey and the UI send it back as the `sessionkey` parameter or cookie.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** How long a session lasts, as CloudStack's default session timeout. */
export const SESSION_SECONDS = 1800;

export interface Session {
  /** Name of the API key Secret of the account that logged in. */
  keySecret: string;
  expiresAt: number;
}

const mac = (payload: string, key: Buffer) => createHmac("sha256", key).update(payload).digest("base64url");

export function issueSession(keySecret: string, key: Buffer, now = Date.now()): string {
  const payload = Buffer.from(
    JSON.stringify({ s: keySecret, e: now + SESSION_SECONDS * 1000, n: randomBytes(6).toString("hex") }),
  ).toString("base64url");
  return `${payload}.${mac(payload, key)}`;
}

/** The session a key stands for, or undefined when it is forged, damaged or expired. */
export function readSession(sessionKey: string, key: Buffer, now = Date.now()): Session | undefined {
  const [payload = "", signature = ""] = sessionKey.split(".");
  const expected = Buffer.from(mac(payload, key));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  try {
    const { s, e } = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as {
      s?: unknown;
      e?: unknown;
    };
    if (typeof s !== "string" || typeof e !== "number" || e <= now) return undefined;
    return { keySecret: s, expiresAt: e };
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

/** The `sessionkey` cookie of a Cookie header. */
export function sessionCookie(cookieHeader: string | undefined): string | undefined {
  for (const part of (cookieHeader ?? "").split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === "sessionkey") return decodeURIComponent(value.join("="));
  }
  return undefined;
}

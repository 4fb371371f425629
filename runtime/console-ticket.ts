// The console relay between the API component and the host agents. Tickets: the API component signs one per console it relays (Ed25519, its private key);
// the VM's host agent checks it with the public key. A host can verify tickets but never mint one,
// so a compromised host reaches no other host's consoles; a ticket names one host and one VM, lives
// seconds, and is taken once (the agent remembers its nonce until it expires).
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
} from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Larger WebSocket messages close the connection (1009): a console moves keystrokes and lines. */
export const CONSOLE_MAX_MESSAGE_BYTES = 64 * 1024;

/** How long a ticket is good for: the relay presents it at once. */
export const TICKET_LIFETIME_MS = 30_000;
/** A longer header is refused before any parsing. */
const MAX_TICKET_LENGTH = 1_024;

interface TicketClaims {
  host: string;
  vm: string;
  /** Epoch ms after which the ticket is refused. */
  exp: number;
  nonce: string;
}

export function issueConsoleTicket(
  privateKey: KeyObject,
  target: { host: string; vm: string },
  now = Date.now(),
): string {
  const claims: TicketClaims = {
    ...target,
    exp: now + TICKET_LIFETIME_MS,
    nonce: randomBytes(16).toString("base64url"),
  };
  const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
  return `${body}.${sign(null, Buffer.from(body), privateKey).toString("base64url")}`;
}

export type TicketCheck = { ok: true; nonce: string; exp: number } | { ok: false; reason: string };

/** Pure but for the signature check: whether `ticket` opens `vm`'s console on `host` now. */
export function checkConsoleTicket(
  publicKey: KeyObject,
  ticket: string,
  target: { host: string; vm: string },
  now = Date.now(),
): TicketCheck {
  if (ticket.length > MAX_TICKET_LENGTH) return { ok: false, reason: "ticket too long" };
  const [body, signature, extra] = ticket.split(".");
  if (!body || !signature || extra !== undefined) return { ok: false, reason: "malformed ticket" };
  if (!verify(null, Buffer.from(body), publicKey, Buffer.from(signature, "base64url")))
    return { ok: false, reason: "bad signature" };
  let claims: Partial<TicketClaims>;
  try {
    claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Partial<TicketClaims>;
  } catch {
    return { ok: false, reason: "malformed ticket" };
  }
  if (claims.host !== target.host) return { ok: false, reason: "ticket for another host" };
  if (claims.vm !== target.vm) return { ok: false, reason: "ticket for another VM" };
  if (typeof claims.exp !== "number" || claims.exp <= now) return { ok: false, reason: "ticket expired" };
  // A clock far ahead on the API component's side must not make tickets that live for hours.
  if (claims.exp > now + 2 * TICKET_LIFETIME_MS) return { ok: false, reason: "ticket lives too long" };
  if (typeof claims.nonce !== "string" || claims.nonce.length > 64)
    return { ok: false, reason: "malformed ticket" };
  return { ok: true, nonce: claims.nonce, exp: claims.exp };
}

/** Nonces of tickets taken, kept until they expire; bounded, refusing rather than forgetting. */
export class TakenTickets {
  private readonly taken = new Map<string, number>();

  private readonly limit: number;

  constructor(limit = 10_000) {
    this.limit = limit;
  }

  /** True once per nonce; false for a replay, or when too many live tickets were taken. */
  take(nonce: string, exp: number, now = Date.now()): boolean {
    for (const [n, e] of this.taken) if (e <= now) this.taken.delete(n);
    if (this.taken.has(nonce) || this.taken.size >= this.limit) return false;
    this.taken.set(nonce, exp);
    return true;
  }
}

/** A key pair for the local cloud and the tests: the private key for the API component, the public for agents. */
export async function writeConsoleKeys(
  dir: string,
): Promise<{ privateKeyFile: string; publicKeyFile: string }> {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const privateKeyFile = join(dir, "console-key.pem");
  const publicKeyFile = join(dir, "console-key.pub.pem");
  await writeFile(privateKeyFile, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  await writeFile(publicKeyFile, publicKey.export({ type: "spki", format: "pem" }), { mode: 0o644 });
  return { privateKeyFile, publicKeyFile };
}

export function readConsolePrivateKey(pem: string): KeyObject {
  return ed25519(createPrivateKey(pem));
}

export function readConsolePublicKey(pem: string): KeyObject {
  return ed25519(createPublicKey(pem));
}

function ed25519(key: KeyObject): KeyObject {
  if (key.asymmetricKeyType !== "ed25519")
    throw new Error(`the console key must be Ed25519, not ${key.asymmetricKeyType}`);
  return key;
}

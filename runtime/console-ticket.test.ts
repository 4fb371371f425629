import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  checkConsoleTicket,
  issueConsoleTicket,
  TakenTickets,
  TICKET_LIFETIME_MS,
} from "./console-ticket.ts";

const api = generateKeyPairSync("ed25519");
const target = { host: "h1", vm: "0b7c4a4e-3a4e-4d6b-9d55-2f1f0e6f8a11" };
const NOW = 1_800_000_000_000;

describe("console tickets", () => {
  it("open the console of the one VM on the one host they name, while they live", () => {
    const ticket = issueConsoleTicket(api.privateKey, target, NOW);
    expect(checkConsoleTicket(api.publicKey, ticket, target, NOW + 1_000)).toMatchObject({ ok: true });
    const refused = (t: string, at = NOW, where = target) =>
      (checkConsoleTicket(api.publicKey, t, where, at) as { reason?: string }).reason;
    expect(refused(ticket, NOW, { ...target, host: "h2" })).toBe("ticket for another host");
    expect(refused(ticket, NOW, { ...target, vm: "another" })).toBe("ticket for another VM");
    expect(refused(ticket, NOW + TICKET_LIFETIME_MS)).toBe("ticket expired");
  });

  it("cannot be made without the API component's private key, nor altered", () => {
    const other = generateKeyPairSync("ed25519");
    const forged = issueConsoleTicket(other.privateKey, target, NOW);
    expect(checkConsoleTicket(api.publicKey, forged, target, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
    const [body, signature] = issueConsoleTicket(api.privateKey, { ...target, host: "h2" }, NOW).split(".");
    const claims = JSON.parse(Buffer.from(body as string, "base64url").toString());
    const altered = `${Buffer.from(JSON.stringify({ ...claims, host: "h1" })).toString("base64url")}.${signature}`;
    expect(checkConsoleTicket(api.publicKey, altered, target, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
    expect(checkConsoleTicket(api.publicKey, "x".repeat(5_000), target, NOW)).toEqual({
      ok: false,
      reason: "ticket too long",
    });
  });

  it("refuses a ticket that would live far longer than tickets do", () => {
    const fromTheFuture = issueConsoleTicket(api.privateKey, target, NOW + 10 * TICKET_LIFETIME_MS);
    expect(checkConsoleTicket(api.publicKey, fromTheFuture, target, NOW)).toEqual({
      ok: false,
      reason: "ticket lives too long",
    });
  });

  it("are taken once, and a full table refuses rather than forgets", () => {
    const taken = new TakenTickets(2);
    expect(taken.take("a", NOW + 10, NOW)).toBe(true);
    expect(taken.take("a", NOW + 10, NOW)).toBe(false);
    expect(taken.take("b", NOW + 10, NOW)).toBe(true);
    expect(taken.take("c", NOW + 10, NOW)).toBe(false);
    // Expired nonces make room; a replay of them is refused by their expiry instead.
    expect(taken.take("c", NOW + 30, NOW + 20)).toBe(true);
  });
});

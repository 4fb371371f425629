import { describe, expect, it } from "vitest";
import { isRevokedBy, MAX_REVOKED_PER_KEY, recordName, revocationPatch } from "./session-revocations.ts";
import type { Session } from "./sessions.ts";

const NOW = 1_000_000;
const session = (id: string, issuedAt = NOW - 1000): Session => ({
  keySecret: "key-alice",
  issuedAt,
  expiresAt: issuedAt + 1_800_000,
  id,
});
/** A record after applying a merge patch of its data. */
const apply = (data: Record<string, string>, patch: Record<string, string | null>) => {
  const next = { ...data };
  for (const [key, value] of Object.entries(patch))
    if (value === null) delete next[key];
    else next[key] = value;
  return next;
};

describe("session revocations", () => {
  it("revokes the session logged out and no other", () => {
    const data = apply({}, revocationPatch(undefined, session("a1"), NOW));
    expect(isRevokedBy(data, session("a1"))).toBe(true);
    expect(isRevokedBy(data, session("b2"))).toBe(false);
    expect(isRevokedBy(undefined, session("a1"))).toBe(false);
    // An id is no property name of a plain object's prototype.
    expect(isRevokedBy(data, session("constructor"))).toBe(false);
  });

  it("drops ids whose sessions have expired anyway", () => {
    const data = { old: String(NOW - 1), live: String(NOW + 60_000) };
    expect(revocationPatch(data, session("new"), NOW)).toEqual({
      old: null,
      new: String(NOW - 1000 + 1_800_000),
    });
  });

  it("stays bounded: past the limit every session of the key issued so far is revoked at once", () => {
    let data: Record<string, string> = {};
    for (let i = 0; i < MAX_REVOKED_PER_KEY; i++)
      data = apply(data, revocationPatch(data, session(`s${i}`), NOW));
    expect(Object.keys(data)).toHaveLength(MAX_REVOKED_PER_KEY);
    data = apply(data, revocationPatch(data, session("one-more"), NOW));
    expect(data).toEqual({ notBefore: String(NOW) });
    expect(isRevokedBy(data, session("one-more"))).toBe(true);
    expect(isRevokedBy(data, session("s3"))).toBe(true);
    expect(isRevokedBy(data, session("later", NOW + 1))).toBe(false);
  });

  it("names a key's record by a hash, a valid object name whatever the Secret's name", () => {
    expect(recordName("key-alice")).toMatch(/^stratus-sessions-[0-9a-f]{20}$/);
    expect(recordName("key-alice")).not.toBe(recordName("key-bob"));
  });
});

import { describe, expect, it } from "vitest";
import { issueSession, passwordMatches, readSession, SESSION_SECONDS, sessionCookie } from "./sessions.ts";

const KEY = Buffer.alloc(32, 7);
const NOW = Date.parse("2026-11-25T10:00:00Z");

describe("sessions", () => {
  it("reads back a session until it expires", () => {
    const key = issueSession("key-alice", KEY, NOW);
    expect(readSession(key, KEY, NOW + 1000)).toEqual({
      keySecret: "key-alice",
      expiresAt: NOW + SESSION_SECONDS * 1000,
    });
    expect(readSession(key, KEY, NOW + SESSION_SECONDS * 1000 + 1)).toBeUndefined();
  });

  it("refuses forged, damaged and foreign keys", () => {
    const key = issueSession("key-alice", KEY, NOW);
    const [payload, signature] = key.split(".");
    const forgedPayload = Buffer.from(JSON.stringify({ s: "key-admin", e: NOW + 10_000 })).toString(
      "base64url",
    );
    expect(readSession(`${forgedPayload}.${signature}`, KEY, NOW)).toBeUndefined();
    expect(readSession(`${payload}.`, KEY, NOW)).toBeUndefined();
    expect(readSession("garbage", KEY, NOW)).toBeUndefined();
    expect(readSession(key, Buffer.alloc(32, 8), NOW)).toBeUndefined();
  });

  it("compares passwords and finds the session cookie", () => {
    expect(passwordMatches("s3cret", "s3cret")).toBe(true);
    expect(passwordMatches("s3cret", "other")).toBe(false);
    expect(passwordMatches("", "")).toBe(false);
    expect(sessionCookie("JSESSIONID=abc; sessionkey=x.y%3D")).toBe("x.y=");
    expect(sessionCookie(undefined)).toBeUndefined();
  });
});

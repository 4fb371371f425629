import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  issueSession,
  passwordMatches,
  readSession,
  SESSION_SECONDS,
  sessionCookieHeaders,
  sessionCookies,
  sessionId,
} from "./sessions.ts";

const KEY = Buffer.alloc(32, 7);
const NOW = Date.parse("2026-11-25T10:00:00Z");

describe("sessions", () => {
  it("reads back a session until it expires", () => {
    const key = issueSession("key-alice", KEY, NOW);
    expect(readSession(key, KEY, NOW + 1000)).toEqual({
      keySecret: "key-alice",
      issuedAt: NOW,
      expiresAt: NOW + SESSION_SECONDS * 1000,
      id: sessionId(key),
    });
    expect(readSession(key, KEY, NOW + SESSION_SECONDS * 1000 + 1)).toBeUndefined();
    expect(issueSession("key-alice", KEY, NOW)).not.toBe(key);
  });

  it("refuses forged, damaged, foreign and empty keys", () => {
    const key = issueSession("key-alice", KEY, NOW);
    const [payload, signature] = key.split(".");
    const forgedPayload = Buffer.from(JSON.stringify({ s: "key-admin", e: NOW + 10_000 })).toString(
      "base64url",
    );
    expect(readSession(`${forgedPayload}.${signature}`, KEY, NOW)).toBeUndefined();
    expect(readSession(`${payload}.`, KEY, NOW)).toBeUndefined();
    expect(readSession("garbage", KEY, NOW)).toBeUndefined();
    expect(readSession("", KEY, NOW)).toBeUndefined();
    expect(readSession(".", KEY, NOW)).toBeUndefined();
    expect(readSession(`${key}${"x".repeat(1024)}`, KEY, NOW)).toBeUndefined();
    expect(readSession(key, Buffer.alloc(32, 8), NOW)).toBeUndefined();
  });

  it("never signs or reads with an empty or short signing key, which would let anyone forge sessions", () => {
    // What a forger computes when the shared key is empty (a Secret without its key).
    const forgedPayload = Buffer.from(JSON.stringify({ s: "key-admin", e: NOW + 10_000 })).toString(
      "base64url",
    );
    const forged = `${forgedPayload}.${createHmac("sha256", Buffer.alloc(0)).update(forgedPayload).digest("base64url")}`;
    expect(readSession(forged, Buffer.alloc(0), NOW)).toBeUndefined();
    expect(readSession(issueSession("key-alice", KEY, NOW), Buffer.alloc(16, 7), NOW)).toBeUndefined();
    expect(() => issueSession("key-alice", Buffer.alloc(0), NOW)).toThrow(/fewer than 32/);
  });

  it("compares passwords and finds every session cookie", () => {
    expect(passwordMatches("s3cret", "s3cret")).toBe(true);
    expect(passwordMatches("s3cret", "other")).toBe(false);
    expect(passwordMatches("", "")).toBe(false);
    expect(sessionCookies("JSESSIONID=abc; sessionkey=x.y%3D; sessionkey=planted")).toEqual([
      "x.y=",
      "planted",
    ]);
    expect(sessionCookies("sessionkey=%E0%A4%A")).toEqual([]);
    expect(sessionCookies(undefined)).toEqual([]);
  });

  it("sets cookies no script reads and no other site sends, Secure over TLS", () => {
    const [session, jsession] = sessionCookieHeaders("k.s", { secure: false });
    expect(session).toBe(
      `sessionkey=k.s; Path=/client; HttpOnly; SameSite=Strict; Max-Age=${SESSION_SECONDS}`,
    );
    expect(jsession).toMatch(/^JSESSIONID=[0-9a-f]{32}; Path=\/client; HttpOnly; SameSite=Strict$/);
    for (const cookie of sessionCookieHeaders("k.s", { secure: true })) expect(cookie).toMatch(/; Secure/);
    expect(sessionCookieHeaders(undefined, { secure: true })).toEqual([
      "sessionkey=; Path=/client; HttpOnly; SameSite=Strict; Secure; Max-Age=0",
      "JSESSIONID=; Path=/client; HttpOnly; SameSite=Strict; Secure; Max-Age=0",
    ]);
  });
});

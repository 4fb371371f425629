import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { canonicalString, canonicalStrings, parseExpires, sign, verifySignature } from "./signature.ts";

interface Vectors {
  secret: string;
  cases: {
    name: string;
    params: Record<string, string>;
    clients: Record<string, { canonical: string; signature: string }>;
  }[];
}
const vectors = JSON.parse(
  readFileSync(new URL("../test/fixtures/cloudstack/signature-vectors.json", import.meta.url), "utf8"),
) as Vectors;

describe("CloudStack signatures", () => {
  it("computes the server's canonical string and signature", () => {
    for (const c of vectors.cases) {
      const reference = c.clients.server_reference as { canonical: string; signature: string };
      expect(canonicalString(c.params), c.name).toBe(reference.canonical);
      expect(sign(reference.canonical, vectors.secret), c.name).toBe(reference.signature);
    }
  });

  it("accepts every client's signature in every vector", () => {
    for (const c of vectors.cases)
      for (const [client, vector] of Object.entries(c.clients))
        expect(verifySignature(c.params, vector.signature, vectors.secret), `${c.name} / ${client}`).toBe(
          true,
        );
  });

  it("refuses a tampered request, a wrong secret and garbage", () => {
    const c = vectors.cases[1] as Vectors["cases"][number];
    const { signature } = c.clients.server_reference as { signature: string };
    expect(verifySignature({ ...c.params, resourceids: "a,c" }, signature, vectors.secret)).toBe(false);
    expect(verifySignature(c.params, signature, "other-secret")).toBe(false);
    expect(verifySignature(c.params, "", vectors.secret)).toBe(false);
    expect(verifySignature(c.params, "not base64 at all!!", vectors.secret)).toBe(false);
  });

  it("accepts CloudMonkey's SHA-512 signature and a '+' turned into a space", () => {
    // cmd/network_test.go in apache/cloudstack-cloudmonkey.
    const params = { apikey: "abc", command: "listZones", response: "json" };
    expect(sign("apikey=abc&command=listzones&response=json", "secret")).toBe("tcMI1Kpm20pLhrrVYtCCcualuBU=");
    expect(
      verifySignature(
        params,
        "/JUUf9SPvNd0sjdbfIxsCxYItNUlGauI+T71cOhHd5fYffHuVAXIba9RzFBK+empezGCzlhw4+R9LFri3CG+oQ==",
        "secret",
      ),
    ).toBe(true);
    const plain = vectors.cases[0] as Vectors["cases"][number];
    const { signature } = plain.clients.server_reference as { signature: string };
    expect(signature).toContain("+");
    expect(verifySignature(plain.params, signature.replaceAll("+", " "), vectors.secret)).toBe(true);
  });

  it("reads every expires format clients send", () => {
    const at = Date.parse("2026-01-01T10:00:00Z");
    for (const value of [
      "2026-01-01T10:00:00Z",
      "2026-01-01T10:00:00+00:00",
      "2026-01-01T10:00:00+0000",
      "2026-01-01T11:00:00+0100",
      "2026-01-01T10:00:00.000000Z",
    ])
      expect(parseExpires(value)?.getTime(), value).toBe(at);
    expect(parseExpires("tomorrow")).toBeUndefined();
    expect(parseExpires("2026-13-45T99:00:00Z")).toBeUndefined();
  });

  it("encodes names, so a name holding `=` and `&` cannot stand for two parameters", () => {
    // A URL signed with an expiry that has passed...
    const signed = {
      apiKey: "k",
      command: "listZones",
      expires: "2020-01-01T00:00:00+0000",
      response: "json",
      signatureVersion: "3",
    };
    const signature = sign(canonicalString(signed), "s");
    // ...replayed with `response` and `signatureVersion` folded into one name, so that no
    // parameter is called signatureVersion any more and the expiry would go unchecked.
    const replay = {
      apiKey: "k",
      command: "listZones",
      expires: "2020-01-01T00:00:00+0000",
      "response=json&signatureVersion": "3",
    };
    expect(canonicalString(replay)).toBe(
      "apikey=k&command=listzones&expires=2020-01-01t00%3a00%3a00%2b0000&response%3djson%26signatureversion=3",
    );
    expect(verifySignature(replay, signature, "s")).toBe(false);
    expect(verifySignature(signed, signature, "s")).toBe(true);
    // Map parameters keep their brackets, as every client signs them.
    expect(canonicalString({ "tags[0].key": "a" })).toBe("tags[0].key=a");
  });

  it("computes each distinct canonical form once, with the one HMAC the signature's length names", () => {
    const counted = () => {
      const calls: string[] = [];
      const hmac: typeof sign = (canonical, secret, algorithm) => {
        calls.push(algorithm ?? "sha1");
        return sign(canonical, secret, algorithm);
      };
      return { calls, hmac };
    };
    const bad20 = Buffer.alloc(20, 1).toString("base64");
    const bad64 = Buffer.alloc(64, 1).toString("base64");
    const plain = { apiKey: "k", command: "deployVirtualMachine", userdata: "A".repeat(1024 * 1024) };
    expect(canonicalStrings(plain)).toHaveLength(1);
    let work = counted();
    expect(verifySignature(plain, bad20, "s", work.hmac)).toBe(false);
    expect(work.calls).toEqual(["sha1"]);
    work = counted();
    expect(verifySignature(plain, bad64, "s", work.hmac)).toBe(false);
    expect(work.calls).toEqual(["sha512"]);
    // A signature of neither length costs no HMAC at all.
    work = counted();
    expect(verifySignature(plain, "AAAA", "s", work.hmac)).toBe(false);
    expect(work.calls).toEqual([]);
    // Every variant showing: still one HMAC per distinct form, never two per form.
    const everything = { apiKey: "k", Command: "x", command: "y", v: "~[*]".repeat(250_000) };
    const forms = canonicalStrings(everything);
    expect(new Set(forms).size).toBe(forms.length);
    expect(forms.length).toBeLessThanOrEqual(7);
    work = counted();
    expect(verifySignature(everything, `${bad20.slice(0, -2)} =`, "s", work.hmac)).toBe(false);
    expect(work.calls).toHaveLength(forms.length);
  });
});

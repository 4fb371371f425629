import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { canonicalString, parseExpires, sign, verifySignature } from "./signature.ts";

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
});

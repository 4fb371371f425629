import { describe, expect, it } from "vitest";
import { addressReach, guardedLookup, refusedAddress } from "./download-policy.ts";

describe("where template downloads may go", () => {
  it("never to a link-local address, however it is written", () => {
    for (const address of ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1"])
      expect(refusedAddress(address, undefined)).toContain("link-local");
  });

  it("never further inside than where the download began", () => {
    expect(refusedAddress("127.0.0.1", "public")).toBe(
      "a redirect from a public address may not lead to loopback 127.0.0.1",
    );
    expect(refusedAddress("10.1.2.3", "public")).toContain("private");
    expect(refusedAddress("::1", "private")).toContain("loopback");
    expect(refusedAddress("8.8.8.8", "loopback")).toBeUndefined();
    expect(refusedAddress("127.0.0.1", "loopback")).toBeUndefined();
    expect(addressReach("192.168.1.1")).toBe("private");
    expect(addressReach("0.0.0.0")).toBe("loopback");
  });

  it("checks the address a name really resolves to", async () => {
    const resolve = (origin: "public" | undefined) =>
      new Promise<string>((done) =>
        guardedLookup(origin ? { origin } : {})("localhost", {}, (error) =>
          done(error ? error.message : "allowed"),
        ),
      );
    expect(await resolve(undefined)).toBe("allowed");
    expect(await resolve("public")).toMatch(/may not lead to loopback/);
  });
});

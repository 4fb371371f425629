import { describe, expect, it } from "vitest";
import type { SSHKeyPair } from "../crds/index.ts";
import { generateVmPassword } from "./guest-login.ts";
import { prunedGuestLoginField } from "./guest-login-fields.ts";
import { keyPairStatus } from "./keypair-status.ts";
import { USER_DATA_MAX_BYTES, USER_DATA_MAX_GET_BASE64, userDataProblem } from "./user-data.ts";

const base64Of = (bytes: number) => Buffer.alloc(bytes, 1).toString("base64");

describe("user data limits", () => {
  it("takes base64 up to 4096 characters in a query string (HTTP GET), as CloudStack", () => {
    expect(userDataProblem("A".repeat(USER_DATA_MAX_GET_BASE64), true)).toBeUndefined();
    expect(userDataProblem("A".repeat(USER_DATA_MAX_GET_BASE64 + 4), true)).toMatch(
      /too long for an http GET request.*POST/,
    );
  });

  it("takes up to 32 KiB decoded in a POST body, Stratus's Secret limit", () => {
    expect(userDataProblem(base64Of(USER_DATA_MAX_BYTES), false)).toBeUndefined();
    expect(userDataProblem(base64Of(USER_DATA_MAX_BYTES + 1), false)).toMatch(/at most 32 KiB decoded/);
  });

  it("refuses what is not base64", () => {
    expect(userDataProblem("not base64!", false)).toMatch(/must be base64/);
    expect(userDataProblem("QUJD=A", false)).toMatch(/must be base64/);
    expect(userDataProblem("QUJDR", false)).toMatch(/must be base64/);
  });
});

describe("generated VM passwords", () => {
  it("are 16 characters without look-alikes, and differ", () => {
    const passwords = Array.from({ length: 50 }, generateVmPassword);
    for (const password of passwords) expect(password).toMatch(/^[a-km-zA-HJ-NP-Z2-9]{16}$/);
    expect(new Set(passwords).size).toBe(50);
  });
});

describe("SSH key pair status", () => {
  const pair = (publicKey: string): SSHKeyPair => ({
    apiVersion: "stratus.io/v1alpha1",
    kind: "SSHKeyPair",
    metadata: { name: "laptop", namespace: "alice", generation: 1 },
    spec: { publicKey },
  });
  const now = new Date("2026-01-01T00:00:00Z");

  it("shows the fingerprint of a valid key", () => {
    const status = keyPairStatus(
      pair("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDyhz9OuYAGFhduTmHItT2kO2LZjGhLOrQbS5F7reNT6 x"),
      now,
    );
    expect(status).toMatchObject({
      observedGeneration: 1,
      fingerprint: "3e:b1:cd:d2:44:b1:25:3f:37:a5:22:b4:14:d6:23:a5",
      conditions: [{ type: "Valid", status: "True", reason: "PublicKeyParsed" }],
    });
  });

  it("says why a key applied with kubectl is not one, with no fingerprint", () => {
    const status = keyPairStatus(
      pair("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIDyhz9OuYAGFhduTmHItT2kO2LZjGhLOrQbS5F7reNT6"),
      now,
    );
    expect(status.fingerprint).toBeUndefined();
    expect(status.conditions).toMatchObject([
      {
        type: "Valid",
        status: "False",
        reason: "InvalidPublicKey",
        message: "the key's data is not a ssh-rsa key",
      },
    ]);
  });
});

describe("guest-login fields a CRD may prune", () => {
  const vm = (spec: Record<string, unknown>) =>
    ({ metadata: { name: "web" }, spec }) as unknown as Parameters<typeof prunedGuestLoginField>[0];

  it("names the field the API server dropped, so the command fails instead of pretending", () => {
    expect(prunedGuestLoginField(vm({}), { keyPairs: ["laptop"] })).toBe("spec.keyPairs");
    expect(prunedGuestLoginField(vm({}), { passwordSecret: "web-password" })).toBe("spec.passwordSecret");
    expect(prunedGuestLoginField(vm({ keyPairs: ["laptop"] }), { keyPairs: ["laptop"] })).toBeUndefined();
    expect(prunedGuestLoginField(vm({}), {})).toBeUndefined();
  });
});

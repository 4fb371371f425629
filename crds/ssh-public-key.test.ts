import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { sshKeyPairObjectName } from "./kinds/ssh-key-pair.ts";
import {
  generateRsaKeyPair,
  parseSshPublicKey,
  SSH_PUBLIC_KEY_MAX_LENGTH,
  sshFingerprint,
} from "./ssh-public-key.ts";

// Made with ssh-keygen; the fingerprints are `ssh-keygen -l -E md5`'s.
const ED25519 =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDyhz9OuYAGFhduTmHItT2kO2LZjGhLOrQbS5F7reNT6 test@example";
const ECDSA =
  "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHIva4UVBR7ieGuDsweOHGAaJgPnuFEnT7rAC4YV5tT1LzhKDZ80ci7BA48TjOiwcmfDKq9wPDr4tneJPRX1nGQ=";

function fingerprintOf(line: string): string {
  const key = parseSshPublicKey(line);
  if ("error" in key) throw new Error(key.error);
  return sshFingerprint(key);
}

describe("OpenSSH public keys", () => {
  it("fingerprints as CloudStack (and ssh-keygen -E md5) show it", () => {
    expect(fingerprintOf(ED25519)).toBe("3e:b1:cd:d2:44:b1:25:3f:37:a5:22:b4:14:d6:23:a5");
    expect(fingerprintOf(ECDSA)).toBe("7b:d8:a6:eb:16:2a:ea:f4:85:20:47:fb:72:25:f9:e9");
  });

  it("keeps the key and its comment, without surrounding white space", () => {
    const key = parseSshPublicKey(`  ${ED25519}\n`);
    expect(key).toMatchObject({ type: "ssh-ed25519", line: ED25519 });
  });

  it.each([
    ["empty", "", /empty/],
    ["an unknown type", ED25519.replace("ssh-ed25519", "ssh-dss"), /type among/],
    ["no base64", "ssh-rsa", /type among/],
    [
      "base64 that does not decode",
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDyhz9OuYAGFhduTmHItT2kO2LZjGhLOrQbS5F7reNT",
      /decode/,
    ],
    ["a blob of another type", ED25519.replace("ssh-ed25519", "ssh-rsa"), /not a ssh-rsa key/],
    ["a truncated blob", "ssh-rsa AAA=", /decode|truncated/],
    ["two keys", `${ED25519}\n${ECDSA}`, /one line/],
    ["a private key", "-----BEGIN OPENSSH PRIVATE KEY-----", /type among/],
    ["an overlong line", `ssh-rsa ${"A".repeat(SSH_PUBLIC_KEY_MAX_LENGTH)}`, /longer than/],
  ])("refuses %s", (_, text, reason) => {
    const key = parseSshPublicKey(text);
    expect("error" in key && key.error).toMatch(reason);
  });

  it("generates an RSA pair whose public half parses and matches ssh-keygen's reading of the private key", async () => {
    const pair = await generateRsaKeyPair("alice@stratus", 2048);
    const key = parseSshPublicKey(pair.publicKey);
    expect(key).toMatchObject({ type: "ssh-rsa" });
    expect(pair.privateKey).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/);
    if (!existsSync("/usr/bin/ssh-keygen")) return;
    const dir = await mkdtemp(join(tmpdir(), "stratus-key-"));
    try {
      await writeFile(join(dir, "id"), pair.privateKey, { mode: 0o600 });
      const derived = await promisify(execFile)("/usr/bin/ssh-keygen", ["-y", "-f", join(dir, "id")]);
      expect(derived.stdout.trim().split(" ").slice(0, 2)).toEqual(pair.publicKey.split(" ").slice(0, 2));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("key pair object names", () => {
  it("are the CloudStack name when it is a valid object name, else a stable digest", () => {
    expect(sshKeyPairObjectName("laptop")).toBe("laptop");
    expect(sshKeyPairObjectName("My Key")).toMatch(/^keypair-[0-9a-f]{24}$/);
    expect(sshKeyPairObjectName("My Key")).toBe(sshKeyPairObjectName("My Key"));
    expect(sshKeyPairObjectName("My Key")).not.toBe(sshKeyPairObjectName("my key"));
  });
});

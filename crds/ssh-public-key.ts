// Pure: OpenSSH public keys as CloudStack's key pairs hold them: one line `<type> <base64> [comment]`,
// whose base64 blob must start with the same type (RFC 4253 6.6), and the MD5 fingerprint in the
// colon form CloudStack shows (SSHKeysHelper.getPublicKeyFingerprint).
import { createHash, generateKeyPair } from "node:crypto";
import { promisify } from "node:util";

export const SSH_KEY_TYPES = [
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
] as const;

/** A 16384-bit RSA key with a comment fits; anything longer is not one public key. */
export const SSH_PUBLIC_KEY_MAX_LENGTH = 8192;

/** The shape of the line (the CRD checks this much; parseSshPublicKey checks the blob too). */
export const SSH_PUBLIC_KEY_PATTERN =
  "^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( [^\\r\\n]*)?$";

export interface SshPublicKey {
  type: (typeof SSH_KEY_TYPES)[number];
  blob: Buffer;
  /** The key as stored: type, base64 and comment, surrounding white space removed. */
  line: string;
}

/** The key, or why it is not one OpenSSH public key. */
export function parseSshPublicKey(text: string): SshPublicKey | { error: string } {
  const line = text.trim();
  if (line.length === 0) return { error: "the public key is empty" };
  if (line.length > SSH_PUBLIC_KEY_MAX_LENGTH)
    return { error: `the public key is longer than ${SSH_PUBLIC_KEY_MAX_LENGTH} characters` };
  if (/[\r\n]/.test(line)) return { error: "give one public key, on one line" };
  if (!new RegExp(SSH_PUBLIC_KEY_PATTERN).test(line))
    return {
      error: `the public key must be "<type> <base64> [comment]" with a type among ${SSH_KEY_TYPES.join(", ")}`,
    };
  const [type, encoded] = line.split(" ") as [SshPublicKey["type"], string];
  const blob = Buffer.from(encoded, "base64");
  if (blob.toString("base64") !== encoded) return { error: "the key's base64 does not decode" };
  if (blob.length < 4) return { error: "the key's data is truncated" };
  const nameLength = blob.readUInt32BE(0);
  if (nameLength + 4 > blob.length || blob.subarray(4, 4 + nameLength).toString("latin1") !== type)
    return { error: `the key's data is not a ${type} key` };
  return { type, blob, line };
}

/** CloudStack's fingerprint: MD5 of the decoded key, lower-case hex pairs joined by colons. */
export function sshFingerprint(key: Pick<SshPublicKey, "blob">): string {
  return createHash("md5").update(key.blob).digest("hex").match(/../g)?.join(":") ?? "";
}

/** An SSH string or mpint field: a 32-bit length, then the bytes. */
function sshField(bytes: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** An mpint: big-endian, with a zero byte in front when the top bit would make it negative. */
function sshMpint(unsigned: Buffer): Buffer {
  const trimmed = unsigned.subarray(unsigned.findIndex((byte) => byte !== 0));
  return sshField((trimmed[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.of(0), trimmed]) : trimmed);
}

/**
 * A new RSA key pair, as CloudStack's createSSHKeyPair makes one: the private key in PEM (PKCS#1,
 * what `ssh -i` reads) and the public key as an OpenSSH line.
 */
export async function generateRsaKeyPair(
  comment: string,
  bits = 3072,
): Promise<{ privateKey: string; publicKey: string }> {
  const { publicKey, privateKey } = await promisify(generateKeyPair)("rsa", { modulusLength: bits });
  const jwk = publicKey.export({ format: "jwk" });
  const blob = Buffer.concat([
    sshField(Buffer.from("ssh-rsa")),
    sshMpint(Buffer.from(jwk.e as string, "base64url")),
    sshMpint(Buffer.from(jwk.n as string, "base64url")),
  ]);
  return {
    privateKey: privateKey.export({ type: "pkcs1", format: "pem" }) as string,
    publicKey: `ssh-rsa ${blob.toString("base64")} ${comment}`,
  };
}

import { Type } from "@sinclair/typebox";
import { cloudStackNameField, objectNameOf } from "../cloudstack-names.ts";
import { defineKind } from "../definition.ts";
import { Conditions, ObservedGeneration } from "../schema.ts";
import { SSH_PUBLIC_KEY_MAX_LENGTH, SSH_PUBLIC_KEY_PATTERN } from "../ssh-public-key.ts";

/**
 * The object name of the key pair CloudStack calls `name`: the name itself when it is a valid
 * object name, else a digest of it. One name, one object, so two registrations of the same name
 * can never both succeed.
 */
export function sshKeyPairObjectName(cloudStackName: string): string {
  return objectNameOf(cloudStackName, "keypair");
}

export const SSHKeyPairKind = defineKind({
  kind: "SSHKeyPair",
  plural: "sshkeypairs",
  singular: "sshkeypair",
  shortNames: ["sshkey"],
  scope: "Namespaced",
  description:
    "An SSH public key of an account (CloudStack's SSH key pair). A VM names its key pairs in spec.keyPairs; the private key is never stored.",
  spec: Type.Object(
    {
      publicKey: Type.String({
        minLength: 1,
        maxLength: SSH_PUBLIC_KEY_MAX_LENGTH,
        pattern: SSH_PUBLIC_KEY_PATTERN,
        description:
          "One OpenSSH public key: `<type> <base64> [comment]`, type ssh-ed25519, ssh-rsa or ecdsa-sha2-nistp256/384/521.",
      }),
      name: cloudStackNameField(),
    },
    {
      description: "The public key.",
      "x-kubernetes-validations": [
        { rule: "self == oldSelf", message: "a key pair cannot be changed; delete it and register again" },
      ],
    },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      fingerprint: Type.Optional(
        Type.String({
          maxLength: 47,
          description: "MD5 fingerprint of the key, colon-separated hex as CloudStack shows it.",
        }),
      ),
      conditions: Conditions("Valid: whether the key's data decodes as the key type it names."),
    },
    { description: "Written by the API component." },
  ),
  printerColumns: [
    {
      name: "Fingerprint",
      type: "string",
      jsonPath: ".status.fingerprint",
      description: "MD5 fingerprint.",
    },
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp", description: "Age." },
  ],
});

// Pure: CloudStack names (free text: capitals, spaces) as Kubernetes object names, one object per
// name, so etcd refuses a second object of the same CloudStack name in an account.
import { createHash } from "node:crypto";
import { Type } from "@sinclair/typebox";

const OBJECT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** The name itself when it is a valid object name, else `<prefix>-<digest of the name>`. */
export function objectNameOf(cloudStackName: string, prefix: string): string {
  if (OBJECT_NAME.test(cloudStackName) && cloudStackName.length <= 253) return cloudStackName;
  return `${prefix}-${createHash("sha256").update(cloudStackName).digest("hex").slice(0, 24)}`;
}

/** spec.name of a kind named by CloudStack names: the name when the object is named after its digest. */
export function cloudStackNameField() {
  return Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 255,
      description:
        "The name CloudStack shows, when it is not a valid object name (the object is then named after its digest). Defaults to the object's name.",
    }),
  );
}

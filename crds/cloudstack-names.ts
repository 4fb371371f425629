// Pure: CloudStack names (free text: capitals, spaces) as Kubernetes object names, one object per
// name, so etcd refuses a second object of the same CloudStack name in an account.
import { createHash } from "node:crypto";

const OBJECT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** The name itself when it is a valid object name, else `<prefix>-<digest of the name>`. */
export function objectNameOf(cloudStackName: string, prefix: string): string {
  if (OBJECT_NAME.test(cloudStackName) && cloudStackName.length <= 253) return cloudStackName;
  return `${prefix}-${createHash("sha256").update(cloudStackName).digest("hex").slice(0, 24)}`;
}

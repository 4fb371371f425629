// Asks the API server whether a user may do something (a SubjectAccessReview): how components
// that act for users (the API component) keep Kubernetes RBAC the one authorization system.
import type { KubeClient } from "./client.ts";

export interface AccessRequest {
  user: string;
  groups: readonly string[];
  verb: string;
  group: string;
  resource: string;
  subresource?: string;
  namespace?: string | undefined;
  name?: string;
}

export function isAllowed(client: KubeClient, request: AccessRequest): Promise<boolean> {
  const { user, groups, ...attributes } = request;
  return review(client, "subjectaccessreviews", { user, groups }, attributes);
}

/** Whether this client's own identity may do something (a SelfSubjectAccessReview). */
export function isSelfAllowed(
  client: KubeClient,
  attributes: Omit<AccessRequest, "user" | "groups">,
): Promise<boolean> {
  return review(client, "selfsubjectaccessreviews", {}, attributes);
}

async function review(
  client: KubeClient,
  plural: "subjectaccessreviews" | "selfsubjectaccessreviews",
  subject: Record<string, unknown>,
  attributes: Omit<AccessRequest, "user" | "groups">,
): Promise<boolean> {
  const resourceAttributes = Object.fromEntries(
    Object.entries(attributes).filter(([, v]) => v !== undefined),
  );
  const result = await client.request<{ status?: { allowed?: boolean } }>(
    "POST",
    `/apis/authorization.k8s.io/v1/${plural}`,
    {
      verb: "create",
      resource: plural,
      body: {
        apiVersion: "authorization.k8s.io/v1",
        kind: plural === "subjectaccessreviews" ? "SubjectAccessReview" : "SelfSubjectAccessReview",
        spec: { ...subject, resourceAttributes },
      },
    },
  );
  return result.status?.allowed === true;
}

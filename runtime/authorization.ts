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

export async function isAllowed(client: KubeClient, request: AccessRequest): Promise<boolean> {
  const { user, groups, ...attributes } = request;
  const resourceAttributes = Object.fromEntries(
    Object.entries(attributes).filter(([, v]) => v !== undefined),
  );
  const review = await client.request<{ status?: { allowed?: boolean } }>(
    "POST",
    "/apis/authorization.k8s.io/v1/subjectaccessreviews",
    {
      verb: "create",
      resource: "subjectaccessreviews",
      body: {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SubjectAccessReview",
        spec: { user, groups, resourceAttributes },
      },
    },
  );
  return review.status?.allowed === true;
}

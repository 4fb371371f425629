// RBAC is enforced: an issued identity has no rights until a RoleBinding grants them.
import { CoreV1Api, RbacAuthorizationV1Api } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import type { LocalControlPlane } from "../../devcluster/controlplane.ts";
import { sharedControlPlane, statusCode, useNamespace, waitFor } from "./support.ts";

describe("RBAC with issued identities", () => {
  let controlPlane: LocalControlPlane;
  let namespace: string;

  beforeAll(async () => {
    controlPlane = await sharedControlPlane();
    namespace = await useNamespace(controlPlane.kubeConfig, "rbac");
  });

  it("refuses a user without bindings and allows the same call once bound", async () => {
    const alice = await controlPlane.issueIdentity("alice", ["stratus:testers"]);
    const asAlice = alice.kubeConfig.makeApiClient(CoreV1Api);
    const listConfigMaps = () => asAlice.listNamespacedConfigMap({ namespace });

    const refusal = await listConfigMaps().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(statusCode(refusal)).toBe(403);
    expect(String((refusal as { body?: string }).body)).toContain(
      'User \\"alice\\" cannot list resource \\"configmaps\\"',
    );

    // Bound through her group, which proves O= in the certificate becomes a Kubernetes group.
    await controlPlane.kubeConfig.makeApiClient(RbacAuthorizationV1Api).createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: "testers-view" },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "view" },
        subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: "stratus:testers" }],
      },
    });
    // kube-root-ca.crt is published into every namespace by kube-controller-manager.
    const names = await waitFor("the RoleBinding to take effect", async () => {
      const list = await listConfigMaps().catch(() => undefined);
      const found = list?.items.map((c) => c.metadata?.name);
      return found?.includes("kube-root-ca.crt") ? found : undefined;
    });
    expect(names).toContain("kube-root-ca.crt");

    // Still nothing outside the namespace.
    await expect(asAlice.listNamespacedConfigMap({ namespace: "default" })).rejects.toMatchObject({
      code: 403,
    });
  });
});

// kube-controller-manager runs: a child with an owner reference is collected after its owner goes.
import { CoreV1Api } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import { sharedControlPlane, statusCode, useNamespace, waitFor } from "./support.ts";

describe("garbage collection", () => {
  let core: CoreV1Api;
  let namespace: string;

  beforeAll(async () => {
    const kubeConfig = (await sharedControlPlane()).kubeConfig;
    core = kubeConfig.makeApiClient(CoreV1Api);
    namespace = await useNamespace(kubeConfig, "gc");
  });

  it("deletes a child after its owner is deleted", async () => {
    const owner = await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "owner" } } });
    await core.createNamespacedConfigMap({
      namespace,
      body: {
        metadata: {
          name: "child",
          ownerReferences: [
            { apiVersion: "v1", kind: "ConfigMap", name: "owner", uid: owner.metadata?.uid as string },
          ],
        },
      },
    });
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "bystander" } } });

    await core.deleteNamespacedConfigMap({ namespace, name: "owner" });
    await waitFor("the child to be garbage-collected", async () => {
      try {
        await core.readNamespacedConfigMap({ namespace, name: "child" });
        return false;
      } catch (error) {
        return statusCode(error) === 404;
      }
    });
    expect((await core.readNamespacedConfigMap({ namespace, name: "bystander" })).metadata?.name).toBe(
      "bystander",
    );
  });
});

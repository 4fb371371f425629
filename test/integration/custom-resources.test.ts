// A CRD installs on the real API server, and its objects are created, watched and deleted
// through @kubernetes/client-node.
import { ApiextensionsV1Api, CustomObjectsApi, type KubeConfig, Watch } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const GROUP = "foundation.test.stratus.io";
const PLURAL = "widgets";

describe("custom resources through client-node", () => {
  let kubeConfig: KubeConfig;
  let namespace: string;

  beforeAll(async () => {
    kubeConfig = (await sharedControlPlane()).kubeConfig;
    namespace = await useNamespace(kubeConfig, "crd");
    const extensions = kubeConfig.makeApiClient(ApiextensionsV1Api);
    await extensions
      .createCustomResourceDefinition({
        body: {
          metadata: { name: `${PLURAL}.${GROUP}` },
          spec: {
            group: GROUP,
            scope: "Namespaced",
            names: { plural: PLURAL, singular: "widget", kind: "Widget" },
            versions: [
              {
                name: "v1",
                served: true,
                storage: true,
                schema: {
                  openAPIV3Schema: {
                    type: "object",
                    properties: {
                      spec: { type: "object", properties: { size: { type: "integer", minimum: 1 } } },
                    },
                  },
                },
              },
            ],
          },
        },
      })
      .catch((error: { code?: number }) => {
        if (error.code !== 409) throw error;
      });
    await waitFor("the Widget CRD to be Established", async () => {
      const crd = await extensions.readCustomResourceDefinition({ name: `${PLURAL}.${GROUP}` });
      return crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True");
    });
  });

  it("creates, watches and deletes objects, and the schema is enforced", async () => {
    const objects = kubeConfig.makeApiClient(CustomObjectsApi);
    const seen: string[] = [];
    let watchEnded: unknown;
    const watch = new Watch(kubeConfig);
    // A new resource's watch cache answers 429 (Retry-After) until it is initialised.
    const request = await waitFor("a watch on the new resource", async () => {
      watchEnded = undefined;
      const controller = await watch.watch(
        `/apis/${GROUP}/v1/namespaces/${namespace}/${PLURAL}`,
        {},
        (phase, object: { metadata: { name: string } }) => seen.push(`${phase} ${object.metadata.name}`),
        (error: unknown) => {
          watchEnded = error ?? "closed";
        },
      );
      return watchEnded === undefined ? controller : undefined;
    });
    try {
      const widget = {
        apiVersion: `${GROUP}/v1`,
        kind: "Widget",
        metadata: { name: "w1" },
        spec: { size: 3 },
      };
      await objects.createNamespacedCustomObject({
        group: GROUP,
        version: "v1",
        namespace,
        plural: PLURAL,
        body: widget,
      });
      const read = (await objects.getNamespacedCustomObject({
        group: GROUP,
        version: "v1",
        namespace,
        plural: PLURAL,
        name: "w1",
      })) as {
        spec: { size: number };
      };
      expect(read.spec.size).toBe(3);

      await expect(
        objects.createNamespacedCustomObject({
          group: GROUP,
          version: "v1",
          namespace,
          plural: PLURAL,
          body: { ...widget, metadata: { name: "w2" }, spec: { size: 0 } },
        }),
      ).rejects.toMatchObject({ code: 422 });

      await objects.deleteNamespacedCustomObject({
        group: GROUP,
        version: "v1",
        namespace,
        plural: PLURAL,
        name: "w1",
      });
      await waitFor(
        "ADDED and DELETED events",
        () => seen.includes("DELETED w1") || watchEnded !== undefined,
      );
      expect(watchEnded).toBeUndefined();
      expect(seen).toEqual(["ADDED w1", "DELETED w1"]);
    } finally {
      request.abort();
    }
  });
});

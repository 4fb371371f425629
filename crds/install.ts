// Installs (or updates) the Stratus CRDs and the finalizer admission policy with server-side
// apply, and waits until the API server serves every kind. Used by `stratus up`, the tests, the
// benchmarks and anything else that needs the API.
import {
  ApiextensionsV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  loadYaml,
  PatchStrategy,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";
import { GROUP, VERSION } from "./definition.ts";
import { renderFinalizerPolicy } from "./finalizers.ts";
import { KINDS } from "./index.ts";
import { crdName, renderCustomResourceDefinition } from "./render.ts";

export const CRD_FIELD_MANAGER = "stratus-crds";

export async function installCustomResourceDefinitions(
  kubeConfig: KubeConfig,
  timeoutMs = 60_000,
): Promise<void> {
  const objects = KubernetesObjectApi.makeApiClient(kubeConfig);
  // client-node serialises built-in kinds from its typed models (`default` is `_default` there);
  // loadYaml turns the wire form into that model, so no schema keyword is lost on the way.
  const apply = (object: Record<string, unknown>) =>
    objects.patch(
      loadYaml<KubernetesObject>(JSON.stringify(object)),
      undefined,
      undefined,
      CRD_FIELD_MANAGER,
      true,
      PatchStrategy.ServerSideApply,
    );
  for (const kind of KINDS) await apply(renderCustomResourceDefinition(kind));
  // Before any VM or Volume can be created: from their first write they carry their finalizers.
  for (const object of renderFinalizerPolicy()) await apply(object);
  const extensions = kubeConfig.makeApiClient(ApiextensionsV1Api);
  const deadline = Date.now() + timeoutMs;
  for (const kind of KINDS) {
    for (;;) {
      const crd = await extensions.readCustomResourceDefinition({ name: crdName(kind) });
      if (isEstablished(crd)) break;
      if (Date.now() > deadline) {
        throw new Error(
          `CRD ${crdName(kind)} is not Established after ${timeoutMs / 1000} s: ${JSON.stringify(crd.status?.conditions)}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  // Established is not yet served: for a moment the API server still answers 503 "Resource kind
  // ... not found" on a new kind. Wait until each kind lists.
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  for (const kind of KINDS) {
    for (;;) {
      const served = await custom
        .listClusterCustomObject({ group: GROUP, version: VERSION, plural: kind.plural, limit: 1 })
        .then(
          () => true,
          (error: unknown) => {
            if (Date.now() > deadline) throw error;
            return false;
          },
        );
      if (served) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

export function isEstablished(crd: V1CustomResourceDefinition): boolean {
  return (crd.status?.conditions ?? []).some((c) => c.type === "Established" && c.status === "True");
}

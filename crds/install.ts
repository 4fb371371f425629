// Installs (or updates) the Stratus CRDs and their admission policies with server-side
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
import { renderSegmentPolicy } from "./network-admission.ts";
import { renderPlacementPolicy } from "./placement-policy.ts";
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
  // Before any VM or Volume can be created: from their first write they carry their finalizers,
  // and only administrators pin VMs to hosts.
  for (const object of [...renderFinalizerPolicy(), ...renderPlacementPolicy()]) await apply(object);
  // Before any tenant can create a Network: only administrators choose its VLAN.
  for (const object of renderSegmentPolicy()) await apply(object);
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
  // Established is not yet served: for a few seconds the API server still answers 503 "Resource
  // kind ... not found" on a new kind, and the finalizer policy cannot mutate a kind whose schema
  // it has not loaded yet. Wait until a dry-run create of each mutated kind goes through admission.
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const probes = [
    {
      plural: "virtualmachines",
      kind: "VirtualMachine",
      body: { spec: { zone: "probe", serviceOffering: "probe", template: "probe" } },
    },
    { plural: "volumes", kind: "Volume", body: { spec: { zone: "probe", size: "1Gi" } } },
    { plural: "volumesnapshots", kind: "VolumeSnapshot", body: { spec: { volume: "probe" } } },
  ];
  for (const { plural, kind, body } of probes) {
    for (;;) {
      const served = await custom
        .createNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace: "default",
          plural,
          body: { apiVersion: `${GROUP}/${VERSION}`, kind, metadata: { name: "install-probe" }, ...body },
          dryRun: "All",
        })
        .then(
          () => true,
          (error: unknown) => {
            // Any answer but "not served yet" means admission ran (a conflict or a refusal is fine).
            const code = (error as { code?: number }).code;
            if (code !== 503 && code !== 404) return true;
            if (Date.now() > deadline) throw error;
            return false;
          },
        );
      if (served) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

export function isEstablished(crd: V1CustomResourceDefinition): boolean {
  return (crd.status?.conditions ?? []).some((c) => c.type === "Established" && c.status === "True");
}

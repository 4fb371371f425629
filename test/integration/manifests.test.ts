// The install manifests against the real API server: every object of the base and of each overlay
// passes server-side validation (kubectl apply --dry-run=server -k).
import { CoreV1Api } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import { kubectl, sharedControlPlane } from "./support.ts";

describe("install manifests", () => {
  let kubeconfigPath: string;
  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    kubeconfigPath = controlPlane.kubeconfigPath;
    // A dry run creates nothing, so the namespaces the objects live in must exist already.
    await controlPlane.kubeConfig
      .makeApiClient(CoreV1Api)
      .createNamespace({ body: { metadata: { name: "stratus-api-keys" } } })
      .catch(() => undefined);
  });

  it.each(["manifests/base", "manifests/overlays/all-in-one"])(
    "%s passes server-side validation",
    async (dir) => {
      const result = await kubectl(kubeconfigPath, [
        "apply",
        "--dry-run=server",
        "--server-side",
        // The CRDs are in the cluster already, applied by the test setup under its own manager.
        "--field-manager=stratus-crds",
        // Other tests of the shared API server applied some of these objects under kubectl's manager:
        // a dry run validates, it need not take their fields over.
        "--force-conflicts",
        "-k",
        dir,
      ]);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toContain(
        "validatingadmissionpolicy.admissionregistration.k8s.io/stratus-host-agent-own-host serverside-applied (server dry run)",
      );
      expect(result.stdout).toContain(
        "apiservice.apiregistration.k8s.io/v1alpha1.subresources.stratus.io serverside-applied (server dry run)",
      );
      expect(result.stdout).toContain(
        "mutatingadmissionpolicy.admissionregistration.k8s.io/stratus-finalizers serverside-applied (server dry run)",
      );
      for (const policy of ["stratus-vm-placement", "stratus-tenant-identities", "stratus-network-segments"])
        expect(result.stdout).toContain(
          `validatingadmissionpolicy.admissionregistration.k8s.io/${policy} serverside-applied (server dry run)`,
        );
    },
  );

  it("runs every control-plane component once: four Deployments, or one all-in-one", async () => {
    const deployments = async (dir: string) => {
      const built = await kubectl(kubeconfigPath, ["kustomize", dir]);
      return [...built.stdout.matchAll(/kind: Deployment\nmetadata:\n(?:.*\n)*?\s+name: (\S+)/g)]
        .map((m) => m[1])
        .sort();
    };
    expect(await deployments("manifests/base")).toEqual([
      "stratus-apiserver",
      "stratus-compute",
      "stratus-fabric",
      "stratus-network",
      "stratus-storage",
    ]);
    expect(await deployments("manifests/overlays/all-in-one")).toEqual([
      "stratus-apiserver",
      "stratus-operator",
    ]);
  });
});

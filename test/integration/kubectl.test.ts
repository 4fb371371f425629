// The kubectl built with the control plane talks to it with the generated kubeconfig.
import { beforeAll, describe, expect, it } from "vitest";
import { kubectl, sharedControlPlane, useNamespace } from "./support.ts";

describe("the built kubectl", () => {
  let kubeconfigPath: string;
  let namespace: string;

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    kubeconfigPath = controlPlane.kubeconfigPath;
    namespace = await useNamespace(controlPlane.kubeConfig, "kubectl");
  });

  it("reports client and server v1.37.2", async () => {
    const result = await kubectl(kubeconfigPath, ["version", "-o", "json"]);
    expect(result.stderr).toBe("");
    const versions = JSON.parse(result.stdout) as {
      clientVersion: { gitVersion: string };
      serverVersion: { gitVersion: string };
    };
    expect(versions.serverVersion.gitVersion).toBe("v1.37.2");
    expect(versions.clientVersion.gitVersion).toBe("v1.37.2");
  });

  it("applies server-side, with kubectl as the field manager", async () => {
    const manifest = `apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
  namespace: ${namespace}
data:
  greeting: hello
`;
    const applied = await kubectl(kubeconfigPath, ["apply", "--server-side", "-f", "-"], manifest);
    expect(applied).toMatchObject({ code: 0, stdout: "configmap/applied serverside-applied\n" });

    const again = await kubectl(
      kubeconfigPath,
      ["apply", "--server-side", "-f", "-"],
      manifest.replace("hello", "again"),
    );
    expect(again.code).toBe(0);
    const read = await kubectl(kubeconfigPath, [
      "get",
      "configmap",
      "applied",
      "-n",
      namespace,
      "-o",
      "json",
      "--show-managed-fields",
    ]);
    const configMap = JSON.parse(read.stdout) as {
      data: Record<string, string>;
      metadata: { managedFields: { manager: string; operation: string }[] };
    };
    expect(configMap.data.greeting).toBe("again");
    expect(configMap.metadata.managedFields).toContainEqual(
      expect.objectContaining({ manager: "kubectl", operation: "Apply" }),
    );
  });
});

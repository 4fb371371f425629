// The Stratus API as users meet it: CRDs installed and Established, examples applied with kubectl
// and read back with their defaults, `kubectl explain` and `kubectl get stratus`.
import { readdir, readFile } from "node:fs/promises";
import { ApiextensionsV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { KINDS } from "../../crds/index.ts";
import { installCustomResourceDefinitions, isEstablished } from "../../crds/install.ts";
import { crdName, renderCustomResourceDefinition } from "../../crds/render.ts";
import { kubectl, sharedControlPlane, useNamespace } from "./support.ts";

type Json = Record<string, unknown>;

describe("the Stratus API on the real API server", () => {
  let kubeConfig: KubeConfig;
  let kubeconfigPath: string;
  let namespace: string;

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    kubeConfig = controlPlane.kubeConfig;
    kubeconfigPath = controlPlane.kubeconfigPath;
    namespace = await useNamespace(kubeConfig, "api");
  });

  it("installs every CRD, Established, exactly as generated", async () => {
    await installCustomResourceDefinitions(kubeConfig); // again: installing is idempotent
    const extensions = kubeConfig.makeApiClient(ApiextensionsV1Api);
    for (const kind of KINDS) {
      const crd = await extensions.readCustomResourceDefinition({ name: crdName(kind) });
      expect(isEstablished(crd), crdName(kind)).toBe(true);
      const generated = renderCustomResourceDefinition(kind) as { spec: { names: Json; versions: Json[] } };
      expect(crd.spec.names).toMatchObject(generated.spec.names);
      expect(crd.spec.versions[0]?.additionalPrinterColumns).toEqual(
        generated.spec.versions[0]?.additionalPrinterColumns,
      );
    }
  });

  it("applies every example server-side and fills in the schema defaults", async () => {
    const files = (await readdir("examples")).filter((f) => f.endsWith(".yaml")).map((f) => `examples/${f}`);
    expect(files).toHaveLength(KINDS.length);
    for (const file of files) {
      const result = await kubectl(kubeconfigPath, ["apply", "--server-side", "-n", namespace, "-f", file]);
      expect(result, file).toMatchObject({ code: 0, stderr: "" });
    }
    const get = async (resource: string, name: string, scoped = true) =>
      JSON.parse(
        (
          await kubectl(kubeconfigPath, [
            "get",
            resource,
            name,
            "-o",
            "json",
            ...(scoped ? ["-n", namespace] : []),
          ])
        ).stdout,
      ) as {
        spec: Json;
      };
    expect((await get("vm", "db-1")).spec).toMatchObject({ runStrategy: "Always", zone: "zone-a" });
    expect((await get("vnet", "backend")).spec).toMatchObject({ dhcp: true, type: "Isolated" });
    expect((await get("vol", "pgdata")).spec).toMatchObject({ type: "DATADISK" });
    expect((await get("ipaddresses.stratus.io", "backend-10-20-0-21")).spec).toMatchObject({ static: false });
    expect((await get("zone", "zone-a", false)).spec).toMatchObject({
      networkType: "Advanced",
      allocationState: "Enabled",
    });
    expect((await get("host", "hv-01", false)).spec).toMatchObject({
      allocationState: "Enabled",
      maintenance: false,
      cpuOvercommitRatio: 4,
    });
    expect((await get("so", "medium", false)).spec).toMatchObject({ highAvailability: true, memory: "4Gi" });
    expect((await get("tmpl", "debian-12", false)).spec).toMatchObject({ format: "qcow2" });
    expect((await get("pool", "zone-a-shared", false)).spec).toMatchObject({ maintenance: false });
    expect((await get("vsnap", "pgdata-before-upgrade")).spec).toMatchObject({ volume: "pgdata" });
    expect((await get("snappol", "pgdata-nightly")).spec).toMatchObject({ timezone: "Europe/Berlin" });
    expect((await get("ag", "databases")).spec).toMatchObject({ type: "host anti-affinity" });
  });

  it("applies examples/small-cloud as it is", async () => {
    const result = await kubectl(kubeconfigPath, [
      "apply",
      "--server-side",
      "-n",
      namespace,
      "-k",
      "examples/small-cloud",
    ]);
    expect(result.stderr).toBe("");
    const documents = (
      await Promise.all(
        (
          await readdir("examples/small-cloud")
        )
          .filter((f) => f !== "kustomization.yaml")
          .map((f) => readFile(`examples/small-cloud/${f}`, "utf8")),
      )
    ).flatMap((text) =>
      parseAllDocuments(text).map((d) => d.toJSON() as { kind: string; metadata: { name: string } }),
    );
    expect(documents.map((d) => d.kind).sort()).toEqual(
      ["DiskOffering", "Network", "ServiceOffering", "Template", "VirtualMachine", "Volume", "Zone"].sort(),
    );
    for (const document of documents) {
      expect(result.stdout).toContain(
        `${document.kind.toLowerCase()}.stratus.io/${document.metadata.name} serverside-applied`,
      );
    }
    const vm = JSON.parse(
      (await kubectl(kubeconfigPath, ["get", "vm", "app-1", "-n", namespace, "-o", "json"])).stdout,
    ) as { spec: Json };
    expect(vm.spec).toMatchObject({
      runStrategy: "Always",
      dataVolumes: [{ name: "data", volume: "app-data" }],
    });
  });

  it("kubectl get stratus lists every kind, with the printer columns", async () => {
    const result = await kubectl(kubeconfigPath, ["get", "stratus", "-A"]);
    expect(result.code).toBe(0);
    for (const kind of KINDS)
      expect(result.stdout, kind.kind).toContain(`${kind.kind.toLowerCase()}.stratus.io/`);
    const vms = await kubectl(kubeconfigPath, ["get", "vm", "-n", namespace]);
    expect(vms.stdout.split("\n")[0]?.split(/\s+/)).toEqual(["NAME", "STATE", "HOST", "IP", "AGE"]);
    const hosts = await kubectl(kubeconfigPath, ["get", "hosts"]);
    expect(hosts.stdout.split("\n")[0]?.split(/\s+/)).toEqual([
      "NAME",
      "ZONE",
      "READY",
      "STATE",
      "CPU-ALLOC",
      "CPU-CAP",
      "MEM-ALLOC",
      "MEM-CAP",
      "AGE",
    ]);
  });

  it("selects VMs by their host with a field selector, as a host agent watches them", async () => {
    const custom = kubeConfig.makeApiClient(CustomObjectsApi);
    const target = { group: "stratus.io", version: "v1alpha1", namespace, plural: "virtualmachines" };
    for (const [name, host] of [
      ["on-h1", "h1"],
      ["on-h2", "h2"],
    ] as const) {
      const vm = await custom.createNamespacedCustomObject({
        ...target,
        body: {
          apiVersion: "stratus.io/v1alpha1",
          kind: "VirtualMachine",
          metadata: { name },
          spec: { zone: "z1", serviceOffering: "tiny", template: "tiny-linux" },
        },
      });
      await custom.replaceNamespacedCustomObjectStatus({
        ...target,
        name,
        body: { ...vm, status: { host, state: "Running" } },
      });
    }
    const onH1 = (await custom.listNamespacedCustomObject({
      ...target,
      fieldSelector: "status.host=h1",
    })) as {
      items: { metadata: { name: string } }[];
    };
    expect(onH1.items.map((vm) => vm.metadata.name)).toEqual(["on-h1"]);
    const printed = await kubectl(kubeconfigPath, ["get", "vm", "on-h2", "-n", namespace, "--no-headers"]);
    expect(printed.stdout.split(/\s+/).slice(0, 3)).toEqual(["on-h2", "Running", "h2"]);
  });

  it("kubectl explain shows the field descriptions", async () => {
    const result = await kubectl(kubeconfigPath, ["explain", "virtualmachine.spec"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("What the VM should be.");
    expect(result.stdout).toMatch(/runStrategy\s+<string>/);
    expect(result.stdout).toContain("Always: keep it running.");
    const nics = await kubectl(kubeconfigPath, ["explain", "vm.spec.nics.ipAddress"]);
    expect(nics.stdout).toContain("A static address inside the network's CIDR; allocated when empty.");
  });
});

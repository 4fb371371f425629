// GitOps without drift: examples/small-cloud applied with server-side apply under Argo CD's field
// manager, the whole control plane and a host left to settle, and then `kubectl diff
// --server-side` reports nothing, and no controller owns any field of any object's spec.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type VirtualMachine, type Volume } from "../../crds/index.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import { qcow2Header } from "../fixtures/qcow2.ts";
import { type StratusProcess, startHostAgent, startOperator } from "./processes.ts";
import { kubectl, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const TEMPLATE_IMAGE = "/var/lib/stratus/templates/tiny-linux.qcow2";
const canWriteImage = process.getuid?.() === 0;

describe.skipIf(!canWriteImage)(
  "GitOps: examples/small-cloud stays in sync (needs root: its template image lives in /var/lib/stratus)",
  () => {
    let client: KubeClient;
    let kubeconfigPath: string;
    let namespace: string;
    let workDir: string;
    const processes: StratusProcess[] = [];
    const suffix = randomBytes(3).toString("hex");
    const apply = (verb: "apply" | "diff") =>
      kubectl(kubeconfigPath, [
        verb,
        "--server-side",
        "--field-manager=argocd",
        "-n",
        namespace,
        "-k",
        "examples/small-cloud",
      ]);

    beforeAll(async () => {
      const controlPlane = await sharedControlPlane();
      kubeconfigPath = controlPlane.kubeconfigPath;
      client = new KubeClient(controlPlane.kubeConfig);
      namespace = await useNamespace(controlPlane.kubeConfig, "gitops");
      workDir = await mkdtemp(join(tmpdir(), "stratus-gitops-"));
      // The example's template is a host path; a stand-in image where `stratus up` would put the real one.
      if (!existsSync(TEMPLATE_IMAGE)) {
        await mkdir("/var/lib/stratus/templates", { recursive: true });
        await writeFile(TEMPLATE_IMAGE, qcow2Header(2n ** 30n));
      }
      processes.push(
        await startOperator({
          kubeconfigPath,
          identity: `gitops-op-${suffix}`,
          args: [`--lease-namespace=${namespace}`],
        }),
        await startHostAgent({
          kubeconfigPath,
          hostName: `gitops-h1-${suffix}`,
          zone: "small",
          leaseNamespace: namespace,
          workDir,
        }),
      );
    });

    afterAll(async () => {
      await client?.delete(Resources.virtualMachines, "app-1", namespace).catch(() => undefined);
      for (const p of processes) await p.stop("SIGKILL");
      await client?.close();
      await rm(workDir, { recursive: true, force: true });
    });

    it("settles with no diff, and every spec field belongs to the user's field manager", async () => {
      const applied = await apply("apply");
      expect(applied.code, applied.stderr).toBe(0);
      await waitFor(
        "the cloud to settle",
        async () => {
          const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "app-1", namespace);
          const volume = await client.get<Volume>(Resources.volumes, "app-data", namespace);
          return vm.status?.state === "Running" && volume.status?.phase === "Attached";
        },
        { timeoutMs: 90_000 },
      );
      const diff = await apply("diff");
      expect(diff.stderr).toBe("");
      expect(diff.stdout).toBe("");
      expect(diff.code).toBe(0);

      const objects: KubeObject[] = [
        await client.get(Resources.zones, "small"),
        await client.get(Resources.serviceOfferings, "tiny"),
        await client.get(Resources.diskOfferings, "small-disk"),
        await client.get(Resources.templates, "tiny-linux"),
        await client.get(Resources.networks, "app-net", namespace),
        await client.get(Resources.volumes, "app-data", namespace),
        await client.get(Resources.virtualMachines, "app-1", namespace),
      ];
      for (const object of objects) {
        const specWriters = (object.metadata.managedFields ?? [])
          .filter(
            (entry) =>
              entry.subresource !== "status" && JSON.stringify(entry.fieldsV1 ?? {}).includes('"f:spec"'),
          )
          .map((entry) => entry.manager);
        expect(specWriters, `${object.kind ?? ""} ${object.metadata.name}`).toEqual(["argocd"]);
      }
    });
  },
);

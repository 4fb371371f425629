// One real control plane for the whole integration run; every test file attaches to it and works
// in namespaces of its own.
import { CoreV1Api } from "@kubernetes/client-node";
import type { TestProject } from "vitest/node";
import { installCustomResourceDefinitions } from "../../crds/install.ts";
import { type ControlPlaneBinaries, ensureBinaries } from "../../devcluster/binaries.ts";
import { LocalControlPlane } from "../../devcluster/controlplane.ts";

declare module "vitest" {
  export interface ProvidedContext {
    controlPlaneDir: string;
    binaries: ControlPlaneBinaries;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const progress = (message: string) => process.stderr.write(`[control plane] ${message}\n`);
  const binaries = await ensureBinaries({ progress });
  const controlPlane = await LocalControlPlane.start({ binaries, unsafeNoFsync: true, progress });
  await controlPlane.kubeConfig
    .makeApiClient(CoreV1Api)
    .createNamespace({ body: { metadata: { name: "stratus-system" } } });
  progress("installing the Stratus CRDs");
  await installCustomResourceDefinitions(controlPlane.kubeConfig);
  project.provide("controlPlaneDir", controlPlane.dir);
  project.provide("binaries", binaries);
  return () => controlPlane.stop();
}

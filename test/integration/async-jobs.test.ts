// The async-job controller against a real API server when its cache is behind: a job can reach a
// replica before the VM it targets does (separate watches), which once failed a deploy with "the
// virtual machine was deleted" in CI. Here the VM cache is never started, so every VM is "not seen
// yet": the job must wait for the VM, and fail only once the VM is really gone. Its controller
// watches only this file's namespace (orchestration-files.ts: NAMESPACED_ACTOR).
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CloudStackApi } from "../../apiserver/api.ts";
import { jobController } from "../../apiserver/jobs.ts";
import { type AsyncJob, Resources, type VirtualMachine } from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import { InformerFactory } from "../../runtime/component.ts";
import { RuntimeMetrics } from "../../runtime/metrics.ts";
import { sharedControlPlane, useNamespace, waitFor, waitUntilGone } from "./support.ts";

describe("async jobs whose target the cache has not seen yet", () => {
  let client: KubeClient;
  let namespace: string;
  const stop = new AbortController();
  let informers: InformerFactory;
  let running: Promise<void>;
  const metrics = new RuntimeMetrics();
  /** How many reconciles the job controller has finished. */
  const reconciles = async () =>
    (await metrics.reconcileDuration.get()).values.find(
      (v) =>
        v.metricName === "stratus_reconcile_duration_seconds_count" && v.labels.controller === "async-jobs",
    )?.value ?? 0;

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "jobs");
    // Its own namespace only: this controller must neither act on other files' jobs nor count
    // their reconciles as looks at its own (it runs alongside other files).
    informers = new InformerFactory(client, { namespace });
    const logger = pino({ level: "silent" });
    const api = new CloudStackApi({ client, informers, keysNamespace: namespace, logger });
    const controller = jobController(api, logger, metrics);
    // Only the job cache runs: the VM cache stays empty, as a lagging watch would leave it.
    api.jobs.start();
    await api.jobs.waitForSync();
    running = controller.run(stop.signal);
  });

  afterAll(async () => {
    stop.abort();
    await running;
    await informers?.stop();
    await client?.close();
  });

  const madeVm = (name: string) =>
    client.create<VirtualMachine>(Resources.virtualMachines, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VirtualMachine",
      metadata: { name, namespace },
      spec: { zone: "nowhere", serviceOffering: "none", template: "none", runStrategy: "Halted" },
    });
  /** Deletes a VM for good: no Stratus controller runs here to lift its finalizers. */
  async function deleted(name: string) {
    await client.delete(Resources.virtualMachines, name, namespace);
    await client.mergePatch(Resources.virtualMachines, name, namespace, { metadata: { finalizers: null } });
    await waitUntilGone(client, Resources.virtualMachines, name, namespace);
  }
  /** A job on the VM `name` whose UID is `uid`, made as the API component makes them. */
  const submitted = (job: string, command: string, name: string, uid: string) =>
    client.create(Resources.asyncJobs, {
      metadata: { name: job, namespace },
      spec: { command, user: "someone", account: namespace, target: { kind: "VirtualMachine", name, uid } },
    });
  const jobNamed = (name: string) => client.get<AsyncJob>(Resources.asyncJobs, name, namespace);
  const failedWithDeletedVm = async (name: string) => {
    const ended = await waitFor(`job ${name} to end`, async () => {
      const job = await jobNamed(name);
      return job.status?.finishedAt ? job : undefined;
    });
    expect(ended.status).toMatchObject({
      state: "Failed",
      error: { text: "the virtual machine was deleted" },
    });
  };

  it("waits for a deployed VM the cache lacks, and fails the job once the VM is deleted", async () => {
    const vm = await madeVm("fresh");
    await submitted("deploy-fresh", "deployVirtualMachine", "fresh", vm.metadata.uid as string);
    // The controller looks at the job again each second while the VM is not in its cache.
    const before = await reconciles();
    await waitFor("three looks at the job", async () =>
      (await reconciles()) >= before + 3 ? true : undefined,
    );
    expect((await jobNamed("deploy-fresh")).status?.finishedAt).toBeUndefined();
    await deleted("fresh");
    await failedWithDeletedVm("deploy-fresh");
  });

  it("does not take a same-named VM made anew for the job's target", async () => {
    const old = await madeVm("reborn");
    await deleted("reborn");
    await madeVm("reborn");
    await submitted("start-reborn", "startVirtualMachine", "reborn", old.metadata.uid as string);
    await failedWithDeletedVm("start-reborn");
  });
});

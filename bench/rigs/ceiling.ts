// The ceiling: how fast this API server creates VirtualMachine objects when nothing reconciles
// them, with the same client, object and concurrency the VM rigs use. VM throughput is reported
// as a fraction of it, which survives a noisy machine better than absolute figures.
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import { isNotFound } from "../../runtime/client.ts";
import { pollUntil } from "../../runtime/time.ts";
import { type BenchContext, NAMESPACE, withConcurrency } from "../lib/context.ts";
import { type Summary, summarize } from "../lib/stats.ts";

export interface CeilingResult {
  objects: number;
  concurrency: number;
  createsPerSecond: number;
  /** Seconds per create request. */
  latency: Summary;
  samples: number[];
}

/** The VM every rig creates: the same object for the ceiling and for the VMs that must run. */
export function benchVm(
  name: string,
  namespace: string,
  zone: string,
  extra: Partial<VirtualMachine["spec"]> = {},
) {
  return {
    metadata: { name, namespace },
    spec: { zone, serviceOffering: "bench-tiny", template: "bench-image", ...extra },
  } as VirtualMachine;
}

export async function measureCeiling(
  context: BenchContext,
  options: { objects: number; concurrency: number },
): Promise<CeilingResult> {
  const namespace = "bench-ceiling";
  await context.namespace(namespace);
  const names = Array.from({ length: options.objects }, (_, i) => `raw-${i}`);
  const samples: number[] = [];
  const started = performance.now();
  await withConcurrency(names, options.concurrency, async (name) => {
    const sent = performance.now();
    await context.client.create(Resources.virtualMachines, benchVm(name, namespace, "bench"));
    samples.push((performance.now() - sent) / 1000);
  });
  const seconds = (performance.now() - started) / 1000;
  // Nothing reconciles these, so nobody would let go of the finalizer every VM gets at its create:
  // the run lets go itself, the namespace goes, and the next rig starts clean.
  await withConcurrency(names, options.concurrency, async (name) => {
    await context.client.mergePatch(Resources.virtualMachines, name, namespace, {
      metadata: { finalizers: null },
    });
  });
  await context.client.delete(NAMESPACE, namespace);
  await pollUntil(
    `namespace ${namespace} to be gone`,
    () => context.client.get(NAMESPACE, namespace).then(() => false, isNotFound),
    { timeoutMs: 300_000, intervalMs: 500 },
  );
  return {
    objects: options.objects,
    concurrency: options.concurrency,
    createsPerSecond: options.objects / seconds,
    latency: summarize(samples),
    samples,
  };
}

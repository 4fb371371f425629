// The scale run: the cluster grown in stages (e.g. 100 hosts and 2,000 VMs, then 1,000 hosts and
// 20,000 VMs), the hosts in fleet processes (bench/fleet.ts). Measured at each stage: whether every
// VM came up (and if not, how far it got), memory per VM of kube-apiserver, etcd and the operator
// (RSS growth over the stage's VMs), listVirtualMachines latency at that size, CPU per VM, and the
// watch traffic of one agent: the events its informers received while the stage's VMs came up, per
// VM bound to it. That agent is a new host of the stage, so each observed agent starts empty and
// takes its share of the stage's VMs; its traffic should not grow with the cluster.
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import { BenchContext, type StratusProcess, sleep, withConcurrency } from "../lib/context.ts";
import { type CpuUse, cpuUse, sampleCpu } from "../lib/cpu.ts";
import { SimulatedHosts } from "../lib/hosts.ts";
import { difference } from "../lib/metrics.ts";
import type { Summary } from "../lib/stats.ts";
import { VmWatch } from "../lib/vm-watch.ts";
import { benchVm } from "./ceiling.ts";
import { measureListVirtualMachines, startCloudStackApi } from "./cloudstack-api.ts";
import { withCatalogue } from "./control-plane.ts";

export interface ScaleOptions {
  /** The cluster's size at the end of each stage (hosts and VMs in all), growing. */
  stages: readonly { hosts: number; vms: number }[];
  hostsPerFleet: number;
  /** Creates in flight. */
  concurrency: number;
  heartbeatSeconds: number;
  leaseDurationSeconds: number;
  listRequests: number;
  /** How long a stage's VMs get to be Running before the run reports how far it got and stops. */
  stageBudgetSeconds: number;
  /** Hosts of one fleet starting (registering, listing) at once. */
  startConcurrency: number;
}

export interface ScaleStage {
  hosts: number;
  vms: number;
  /** Every host Ready and every VM of the stage Running within the budget. */
  completed: boolean;
  hostsRegistered: number;
  /** VMs the stage created within its budget (of `vms` minus the earlier stages'); per-VM figures divide by it. */
  created: number;
  /** VMs Running at the end of the stage (of `vms`). */
  running: number;
  seconds: { hostsUp: number; creates: number; untilRunning: number };
  /** RSS growth over the stage divided by the VMs it created, bytes. */
  memoryPerVm: { kubeApiServer: number; etcd: number; operator: number };
  rss: { kubeApiServer: number; etcd: number; operator: number; fleets: number };
  /** The watch traffic of one agent, a host new in this stage, while the stage's VMs came up. */
  observer: {
    host: string;
    ownVms: number;
    /** Watch events received (bookmarks apart), by resource. */
    eventsByResource: Record<string, number>;
    events: number;
    eventsPerOwnVm: number;
    /** Events per VM created anywhere in the cluster in this stage. */
    eventsPerClusterVm: number;
  };
  listVirtualMachines?: Summary;
  cpu: Record<string, CpuUse>;
}

export interface ScaleResult {
  options: ScaleOptions;
  stages: ScaleStage[];
  /** Where it stopped, when it did not complete. */
  stoppedAt?: string;
}

export async function measureScale(
  context: BenchContext,
  operator: StratusProcess,
  options: ScaleOptions,
  /** Called with the results so far after each stage: a run stopped later keeps them. */
  onStage: (result: ScaleResult) => Promise<void> = async () => {},
): Promise<ScaleResult> {
  const namespace = "bench-scale";
  const zone = "bench-scale";
  await context.namespace(namespace);
  return withCatalogue(context, [zone], async () => {
    const groups: SimulatedHosts[] = [];
    const api = await startCloudStackApi(context, namespace);
    const watch = new VmWatch(context.client, namespace);
    await watch.start();
    const stages: ScaleStage[] = [];
    let stoppedAt: string | undefined;
    try {
      let hosts = 0;
      let vms = 0;
      for (const stage of options.stages) {
        const label = `scale: ${stage.hosts} hosts, ${stage.vms} VMs`;
        const stageStart = Date.now();
        context.progress(
          `${label}: starting hosts ${hosts}-${stage.hosts - 1} in fleets of ${options.hostsPerFleet}`,
        );
        const group = await SimulatedHosts.start(context, {
          mode: "fleet",
          zone,
          first: hosts,
          hosts: stage.hosts - hosts,
          hostsPerFleet: options.hostsPerFleet,
          startConcurrency: options.startConcurrency,
          heartbeatSeconds: options.heartbeatSeconds,
          leaseDurationSeconds: options.leaseDurationSeconds,
        });
        groups.push(group);
        const observer = group.names[0] as string;
        const hostsUp = Date.now();
        await sleep(3_000); // start-up writes settle before the baseline
        const roles = context.processRoles({
          operator: [operator.pid],
          agents: groups.flatMap((g) => g.pids),
          "API component": [api.pid],
        });
        const memoryBefore = memory(context, operator);
        const cpuBefore = sampleCpu(roles);
        const eventsBefore = (await group.hostMetrics(observer)).sum(
          "stratus_informer_watch_events_total",
          (l) => (l.type === "BOOKMARK" ? undefined : l.resource),
        );

        const names = Array.from({ length: stage.vms - vms }, (_, i) => `scale-${vms + i}`);
        context.progress(`${label}: creating ${names.length} VMs at concurrency ${options.concurrency}`);
        let created = 0;
        const ticker = setInterval(
          () => context.progress(`${label}: ${created} created, ${watch.count("Running")} Running`),
          15_000,
        );
        let completed = true;
        try {
          // The budget covers the creates too: at 1,000 hosts they slowed to a few per second.
          const deadline = hostsUp + options.stageBudgetSeconds * 1000;
          await withConcurrency(names, options.concurrency, async (name) => {
            if (Date.now() > deadline) return;
            await context.client.create(Resources.virtualMachines, benchVm(name, namespace, zone));
            created++;
          });
          const createsDone = Date.now();
          // A fleet that ran out of memory ends the stage: its hosts will not come back.
          const exited = () => groups.flatMap((g) => g.exited());
          await watch
            .until(
              () => watch.count("Running") >= stage.vms || exited().length > 0,
              Math.max(0, deadline - createsDone),
              `${stage.vms} VMs Running`,
            )
            .catch((error: unknown) => {
              completed = false;
              stoppedAt = `${label}: ${String(error)}; ${created} of ${names.length} created, ${watch.count("Running")} of ${stage.vms} Running`;
            });
          if (exited().length > 0) {
            completed = false;
            stoppedAt = `${label}: ${exited().join(", ")} exited (see their logs); ${watch.count("Running")} of ${stage.vms} Running`;
          }
          if (stoppedAt) context.progress(stoppedAt);
          vms = stage.vms;
          hosts = stage.hosts;
          const running = Date.now();
          await sleep(5_000); // caches and heaps settle before memory is read
          const cpu = cpuUse(cpuBefore, sampleCpu(roles), Math.max(created, 1));
          const memoryAfter = memory(context, operator);
          // Its fleet may be the one that exited: then its traffic is unknown (empty).
          const eventsAfter = await group.hostMetrics(observer).then(
            (m) =>
              m.sum("stratus_informer_watch_events_total", (l) =>
                l.type === "BOOKMARK" ? undefined : l.resource,
              ),
            () => eventsBefore,
          );
          const events = difference(eventsAfter, eventsBefore);
          const ownVms = (
            await context.client.list<VirtualMachine>(Resources.virtualMachines, {
              namespace,
              fieldSelector: `status.host=${observer}`,
            })
          ).items.length;
          const total = [...events.values()].reduce((a, b) => a + b, 0);
          const registered = (await context.client.list(Resources.hosts)).items.length;
          const result: ScaleStage = {
            hosts: stage.hosts,
            vms: stage.vms,
            completed,
            hostsRegistered: registered,
            created,
            running: watch.count("Running"),
            seconds: {
              hostsUp: (hostsUp - stageStart) / 1000,
              creates: (createsDone - hostsUp) / 1000,
              untilRunning: (running - hostsUp) / 1000,
            },
            memoryPerVm: {
              kubeApiServer: (memoryAfter.kubeApiServer - memoryBefore.kubeApiServer) / Math.max(created, 1),
              etcd: (memoryAfter.etcd - memoryBefore.etcd) / Math.max(created, 1),
              operator: (memoryAfter.operator - memoryBefore.operator) / Math.max(created, 1),
            },
            rss: {
              ...memoryAfter,
              fleets: groups.flatMap((g) => g.pids).reduce((sum, pid) => sum + BenchContext.rss(pid), 0),
            },
            observer: {
              host: observer,
              ownVms,
              eventsByResource: Object.fromEntries([...events].filter(([, n]) => n > 0)),
              events: total,
              eventsPerOwnVm: ownVms ? total / ownVms : Number.NaN,
              eventsPerClusterVm: total / Math.max(created, 1),
            },
            cpu,
          };
          context.progress(`${label}: listVirtualMachines with ${stage.vms} VMs in the account`);
          result.listVirtualMachines = (
            await measureListVirtualMachines(api, stage.vms, options.listRequests)
          ).latency;
          stages.push(result);
          await onStage({ options, stages, ...(stoppedAt ? { stoppedAt } : {}) });
        } finally {
          clearInterval(ticker);
        }
        if (!completed) break;
      }
    } catch (error) {
      stoppedAt ??= `${String(error)}`;
      context.progress(`scale run stopped: ${stoppedAt}`);
    } finally {
      await watch.stop();
      await api.stop();
      for (const group of groups) await group.stop();
    }
    return { options, stages, ...(stoppedAt ? { stoppedAt } : {}) };
  });
}

function memory(context: BenchContext, operator: StratusProcess) {
  return {
    kubeApiServer: BenchContext.rss(context.controlPlane.pid("kube-apiserver") as number),
    etcd: BenchContext.rss(context.controlPlane.pid("etcd") as number),
    operator: BenchContext.rss(operator.pid),
  };
}

// Watches a namespace's VirtualMachines from the benchmark and stamps, on this machine's clock,
// when each VM first reached each step of coming up: placed by the scheduler, addresses
// allocated, volumes ready, Running. Phases between the stamps show which component's time
// dominates create->Running.
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import type { KubeClient } from "../../runtime/client.ts";
import { Informer } from "../../runtime/informer.ts";

export const STEPS = ["Scheduled", "NetworksReady", "VolumesReady", "Running"] as const;
export type Step = (typeof STEPS)[number];

export class VmWatch {
  /** VM name → step → ms since the epoch when the watch first saw it. */
  readonly stamps = new Map<string, Partial<Record<Step, number>>>();
  /** Step -> VMs that reached it: counted as they do, so waiting on 20,000 VMs stays cheap. */
  private readonly reached = new Map<Step, number>();
  private readonly informer: Informer<VirtualMachine>;
  private readonly waiters = new Set<() => void>();

  constructor(client: KubeClient, namespace: string) {
    this.informer = new Informer<VirtualMachine>(client, Resources.virtualMachines, { namespace });
    const see = (vm: VirtualMachine) => this.see(vm);
    this.informer.addHandlers({ onAdd: see, onUpdate: (_, vm) => see(vm) });
  }

  async start(): Promise<void> {
    this.informer.start();
    await this.informer.waitForSync();
  }

  stop(): Promise<void> {
    return this.informer.stop();
  }

  count(step: Step): number {
    return this.reached.get(step) ?? 0;
  }

  /** Resolves when `done` holds, checked on every change; rejects after timeoutMs. */
  until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!done()) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`gave up after ${timeoutMs / 1000} s waiting for ${what}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  private see(vm: VirtualMachine): void {
    const now = Date.now();
    const name = vm.metadata.name as string;
    const stamps = this.stamps.get(name) ?? {};
    for (const step of STEPS) {
      if (stamps[step] !== undefined) continue;
      const reached =
        step === "Running"
          ? vm.status?.state === "Running"
          : vm.status?.conditions?.some((c) => c.type === step && c.status === "True");
      if (!reached) continue;
      stamps[step] = now;
      this.reached.set(step, this.count(step) + 1);
    }
    this.stamps.set(name, stamps);
    for (const waiter of [...this.waiters]) waiter();
  }
}

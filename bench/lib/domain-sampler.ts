// Where each guest runs, sampled from every simulated host's /debug/domains: the ground truth the
// HA trials check "never on two hosts" against at every step. A host whose agent does not answer
// (frozen with SIGSTOP, or busy) keeps the guests it last showed; a dead agent's guests died with
// it (a simulated host's test driver lives in the agent process).
import { DOMAIN_PREFIX } from "../../host-agent/domain-xml.ts";

export interface HostSample {
  /** When the host last answered. */
  at: number;
  /** UIDs of the VMs whose domains ran then. */
  running: Set<string>;
}

export interface TwiceRunning {
  vm: string;
  hosts: string[];
  at: string;
}

export class DomainSampler {
  readonly samples = new Map<string, HostSample>();
  readonly twice: TwiceRunning[] = [];
  rounds = 0;
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly hosts: () => { name: string; healthPort?: number; alive: boolean }[];
  private readonly intervalMs: number;

  constructor(hosts: () => { name: string; healthPort?: number; alive: boolean }[], intervalMs = 300) {
    this.hosts = hosts;
    this.intervalMs = intervalMs;
  }

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        await this.round();
        await new Promise((resolve) => setTimeout(resolve, this.intervalMs));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** Hosts whose latest answer, given after `since`, shows the VM's domain running. */
  runningOn(vmUid: string, since: number): string[] {
    return [...this.samples]
      .filter(([, sample]) => sample.at > since && sample.running.has(vmUid))
      .map(([host]) => host);
  }

  private async round(): Promise<void> {
    await Promise.all(
      this.hosts().map(async (host) => {
        if (!host.alive || host.healthPort === undefined) {
          this.samples.delete(host.name);
          return;
        }
        try {
          const response = await fetch(`http://127.0.0.1:${host.healthPort}/debug/domains`, {
            signal: AbortSignal.timeout(this.intervalMs),
          });
          const domains = (await response.json()) as { name: string; state: string }[];
          this.samples.set(host.name, {
            at: Date.now(),
            running: new Set(
              domains
                .filter((d) => d.name.startsWith(DOMAIN_PREFIX) && d.state === "running")
                .map((d) => d.name.slice(DOMAIN_PREFIX.length)),
            ),
          });
        } catch {
          // No answer: its guests are as it last said.
        }
      }),
    );
    this.rounds++;
    const hostsOf = new Map<string, string[]>();
    for (const [host, sample] of this.samples)
      for (const vm of sample.running) hostsOf.set(vm, [...(hostsOf.get(vm) ?? []), host]);
    for (const [vm, hosts] of hostsOf)
      if (hosts.length > 1) this.twice.push({ vm, hosts, at: new Date().toISOString() });
  }
}

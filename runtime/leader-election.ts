// Leader election on a coordination.k8s.io Lease, as client-go does it: acquire when the lease
// is free or its holder stopped renewing it for a whole lease duration (as observed locally, so
// clock skew between machines does not matter), renew every retry period, give up leadership when
// renewing fails for the renew deadline, and release the lease on graceful shutdown so a standby
// takes over at its next retry instead of waiting out the lease.
import type { Logger } from "pino";
import {
  ApiError,
  isAlreadyExists,
  isConflict,
  isNotFound,
  type KubeClient,
  type KubeObject,
  type ResourceType,
} from "./client.ts";
import { kubeMicroTime, sleep } from "./time.ts";

export const LEASE: ResourceType = {
  group: "coordination.k8s.io",
  version: "v1",
  plural: "leases",
  kind: "Lease",
  namespaced: true,
};

export interface Lease extends KubeObject {
  spec: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  logger?: Logger;
  onLeadershipChange?: (leading: boolean) => void;
}

export class LeaderElector {
  private readonly client: KubeClient;
  private readonly options: Required<Omit<LeaderElectionOptions, "logger" | "onLeadershipChange">> &
    LeaderElectionOptions;
  private observed: { resourceVersion: string; at: number } | undefined;
  private leading = false;
  /** The last attempt found the lease held, unexpired, by another process. */
  private observedOtherHolder = false;

  constructor(client: KubeClient, options: LeaderElectionOptions) {
    this.client = client;
    this.options = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000, ...options };
  }

  isLeader(): boolean {
    return this.leading;
  }

  /**
   * Campaigns until `signal` aborts. While leading, `lead` runs with a signal that aborts when
   * leadership is lost or on shutdown; its promise must settle once that signal aborts.
   */
  async run(signal: AbortSignal, lead: (leaderSignal: AbortSignal) => Promise<void>): Promise<void> {
    while (!signal.aborted) {
      if (!(await this.tryAcquireOrRenew())) {
        await sleep(this.options.retryPeriodMs, signal);
        continue;
      }
      this.setLeading(true);
      const leadership = new AbortController();
      const stop = () => leadership.abort();
      signal.addEventListener("abort", stop, { once: true });
      const work = lead(leadership.signal).catch((error: unknown) => {
        this.options.logger?.error({ err: String(error) }, "leader work failed");
      });
      await this.renewWhileLeading(leadership.signal);
      leadership.abort();
      signal.removeEventListener("abort", stop);
      await work;
      this.setLeading(false);
      if (signal.aborted) await this.release();
    }
  }

  private async renewWhileLeading(leadership: AbortSignal): Promise<void> {
    let lastRenew = Date.now();
    while (!leadership.aborted) {
      await sleep(this.options.retryPeriodMs, leadership);
      if (leadership.aborted) return;
      if (await this.tryAcquireOrRenew()) {
        lastRenew = Date.now();
      } else if (Date.now() - lastRenew > this.options.renewDeadlineMs || this.observedOtherHolder) {
        this.options.logger?.warn({ lease: this.options.name }, "lost the leader lease");
        return;
      }
    }
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.options.logger?.info(
      { lease: `${this.options.namespace}/${this.options.name}` },
      leading ? "became leader" : "stopped leading",
    );
    this.options.onLeadershipChange?.(leading);
  }

  /** One attempt; true when this process holds the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    const now = new Date();
    const leaseDurationSeconds = Math.ceil(this.options.leaseDurationMs / 1000);
    try {
      let lease: Lease;
      try {
        lease = await this.client.get<Lease>(LEASE, name, namespace);
      } catch (error) {
        if (!isNotFound(error)) throw error;
        await this.client.create<Lease>(LEASE, {
          metadata: { name, namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds,
            acquireTime: kubeMicroTime(now),
            renewTime: kubeMicroTime(now),
            leaseTransitions: 0,
          },
        });
        this.observed = undefined;
        return true;
      }
      const resourceVersion = lease.metadata.resourceVersion ?? "";
      if (this.observed?.resourceVersion !== resourceVersion)
        this.observed = { resourceVersion, at: Date.now() };
      const holder = lease.spec.holderIdentity ?? "";
      const heldByOther = holder !== "" && holder !== identity;
      this.observedOtherHolder = heldByOther;
      const expiresAt = this.observed.at + (lease.spec.leaseDurationSeconds ?? leaseDurationSeconds) * 1000;
      if (heldByOther && expiresAt > Date.now()) return false;
      const renewing = holder === identity;
      await this.client.replace<Lease>(LEASE, {
        ...lease,
        spec: {
          holderIdentity: identity,
          leaseDurationSeconds,
          acquireTime: renewing && lease.spec.acquireTime ? lease.spec.acquireTime : kubeMicroTime(now),
          renewTime: kubeMicroTime(now),
          leaseTransitions: (lease.spec.leaseTransitions ?? 0) + (renewing ? 0 : 1),
        },
      });
      this.observedOtherHolder = false;
      return true;
    } catch (error) {
      // Someone else wrote the lease first: they won this round.
      if (isConflict(error) || isAlreadyExists(error)) return false;
      this.options.logger?.warn(
        { lease: name, err: error instanceof ApiError ? error.message : String(error) },
        "leader election attempt failed",
      );
      return false;
    }
  }

  /** Gives the lease up so a standby acquires it at its next retry. */
  private async release(): Promise<void> {
    const { namespace, name, identity } = this.options;
    try {
      const lease = await this.client.get<Lease>(LEASE, name, namespace);
      if (lease.spec.holderIdentity !== identity) return;
      const now = kubeMicroTime();
      await this.client.replace<Lease>(LEASE, {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: "",
          leaseDurationSeconds: 1,
          renewTime: now,
          acquireTime: now,
        },
      });
      this.options.logger?.info({ lease: `${namespace}/${name}` }, "released the leader lease");
    } catch (error) {
      this.options.logger?.warn(
        { lease: name, err: String(error) },
        "could not release the leader lease; it expires by itself",
      );
    }
  }
}

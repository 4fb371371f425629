// The agent's side of fencing. The fabric restarts an HA VM on another host once this host's
// heartbeat Lease has expired; before that can happen the HA guests here must be off, and must
// stay off until a fresh read says they are still this host's. Three parts:
// - after each renewal the agent writes the new fence deadline for its watchdog (fence-watchdog.ts),
//   a separate process that powers the HA guests off when the deadline passes, even if this
//   process is stopped or hung;
// - the agent does the same itself at the deadline (cut off but alive, or run without a watchdog);
// - an HA guest starts only under a current Lease, after a fresh read shows the VM bound here and
//   a write conditional on that read (status.startClaim) succeeds: the fabric's failover is written
//   the same way, so exactly one of the two wins.
import { spawn } from "node:child_process";
import { mkdir, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { isReleasedByFailover, Resources, type VirtualMachine } from "../crds/index.ts";
import { isConflict, isNotFound, type KubeClient } from "../runtime/client.ts";
import { unlessGone } from "../runtime/objects.ts";
import { isAlive } from "../runtime/process-alive.ts";
import {
  FENCED_FILE,
  type FenceRecord,
  type FenceState,
  fenceDeadline,
  readJson,
  STATE_FILE,
  WATCHDOG_PID_FILE,
  writeJson,
} from "./fence-state.ts";

/** The status.startClaim writes have a field manager of their own (see agent-writes.ts). */
export const START_CLAIM_FIELD_MANAGER = "stratus-host-agent-claim";

/** A start must leave the guest this long before the deadline to come up under the Lease. */
const START_SLACK_MS = 500;

export interface FencingOptions {
  client: KubeClient;
  host: string;
  cluster: string;
  libvirtUri: string;
  leaseDurationMs: number;
  log: Logger;
  /** Where the watchdog's files live; without it no watchdog runs (the fleet benchmark). */
  dir?: string;
  /** The UIDs of the HA VMs bound here. */
  haVms: () => string[];
  /** Powers off a domain if it runs. */
  powerOff: (uid: string) => Promise<boolean>;
  /** What else stops at the deadline (the routers here, which another host takes over). */
  atDeadline?: () => Promise<void>;
  now?: () => number;
}

export class Fencing {
  private readonly o: FencingOptions;
  private deadline = 0;
  /** HA guests started by this process: listed for the watchdog before they start. */
  private readonly started = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(options: FencingOptions) {
    this.o = options;
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Whether the Lease is current with room to start a guest under it. */
  leaseCurrent(): boolean {
    return this.now() + START_SLACK_MS < this.deadline;
  }

  /** After a renewal that wrote `renewedAtMs`: the new deadline, for the watchdog and for this process. */
  async renewed(renewedAtMs: number): Promise<void> {
    this.deadline = fenceDeadline(renewedAtMs, this.o.leaseDurationMs);
    await this.writeState();
    await this.ensureWatchdog();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.fenceHere(), Math.max(0, this.deadline - this.now()));
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /**
   * Why the HA VM must not start here now, or undefined once this host holds the start: the Lease
   * is current, a fresh read shows the VM bound here, the claim on that read was written, and the
   * watchdog knows the guest.
   */
  async claimStart(vm: VirtualMachine): Promise<string | undefined> {
    if (!this.leaseCurrent())
      return `the heartbeat Lease of ${this.o.host} is not current: HA VMs start only under a current Lease`;
    const { name, namespace, uid } = vm.metadata as { name: string; namespace: string; uid: string };
    const fresh = await unlessGone(
      this.o.client.get<VirtualMachine>(Resources.virtualMachines, name, namespace),
    );
    if (!fresh || fresh.metadata.uid !== uid || fresh.status?.host !== this.o.host)
      return `a fresh read shows the VM ${fresh ? `bound to ${fresh.status?.host ?? "no host"}` : "gone"}`;
    if (isReleasedByFailover(fresh)) return "the fabric released the VM to another host";
    try {
      await this.o.client.apply(
        Resources.virtualMachines,
        {
          metadata: { name, namespace, resourceVersion: fresh.metadata.resourceVersion as string },
          status: { startClaim: { host: this.o.host, at: new Date(this.now()).toISOString() } },
        },
        { fieldManager: START_CLAIM_FIELD_MANAGER, subresource: "status" },
      );
    } catch (error) {
      if (isConflict(error) || isNotFound(error)) return "the VM changed while this host claimed its start";
      throw error;
    }
    if (!this.leaseCurrent()) return `the heartbeat Lease of ${this.o.host} ran out while claiming the start`;
    this.started.add(uid);
    await this.writeState();
    return undefined;
  }

  /** What the watchdog fenced while this agent could not say so, taken once. */
  async takeFenceRecord(): Promise<FenceRecord | undefined> {
    if (!this.o.dir) return undefined;
    const record = await readJson<FenceRecord>(this.o.dir, FENCED_FILE);
    if (record) await rm(join(this.o.dir, FENCED_FILE), { force: true });
    return record;
  }

  private haDomains(): string[] {
    return [...new Set([...this.o.haVms(), ...this.started])];
  }

  private async writeState(): Promise<void> {
    if (!this.o.dir) return;
    const state: FenceState = {
      pid: process.pid,
      host: this.o.host,
      cluster: this.o.cluster,
      libvirtUri: this.o.libvirtUri,
      deadline: this.deadline,
      haDomains: this.haDomains(),
    };
    await mkdir(this.o.dir, { recursive: true });
    await writeJson(this.o.dir, STATE_FILE, state);
  }

  /** One watchdog per host: it outlives agent restarts, and a new agent starts one if it is gone. */
  private async ensureWatchdog(): Promise<void> {
    const dir = this.o.dir;
    if (!dir) return;
    const pid = await readJson<number>(dir, WATCHDOG_PID_FILE);
    if (pid !== undefined && isAlive(pid)) return;
    const script = fileURLToPath(
      new URL(
        import.meta.url.endsWith(".ts") ? "./fence-watchdog.ts" : "./fence-watchdog.js",
        import.meta.url,
      ),
    );
    const logFile = await open(join(dir, "watchdog.log"), "a");
    try {
      const child = spawn(process.execPath, [script, `--dir=${dir}`], {
        detached: true,
        stdio: ["ignore", logFile.fd, logFile.fd],
      });
      child.unref();
      await writeJson(dir, WATCHDOG_PID_FILE, child.pid);
      this.o.log.info({ pid: child.pid, dir }, "started the fence watchdog");
    } finally {
      await logFile.close();
    }
  }

  /** The deadline passed without a renewal: the HA guests go off now. */
  private async fenceHere(): Promise<void> {
    if (this.now() < this.deadline) return;
    const off: string[] = [];
    for (const uid of this.haDomains()) {
      try {
        if (await this.o.powerOff(uid)) off.push(uid);
      } catch (error) {
        this.o.log.error(
          { uid, err: String(error) },
          "could not power off an HA guest at the fence deadline",
        );
      }
    }
    if (off.length > 0)
      this.o.log.warn(
        { domains: off },
        "fenced: the heartbeat Lease was not renewed in time; HA guests powered off",
      );
    await this.o
      .atDeadline?.()
      .catch((error: unknown) =>
        this.o.log.error({ err: String(error) }, "could not stop what stops at the fence deadline"),
      );
    // A start that was under way may finish after this: look again shortly while still past.
    this.timer = setTimeout(() => void this.fenceHere(), 1_000);
    this.timer.unref();
  }
}

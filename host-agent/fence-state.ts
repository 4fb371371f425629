// What a host agent tells its fence watchdog, and what the watchdog does with it. The agent writes
// the state file after every renewal of its heartbeat Lease; the watchdog, a process of its own
// (so an agent that is stopped, hung or cut off still gets fenced), powers off the HA guests once
// the deadline passes. Both sides read the same file, so they can never disagree on the deadline.
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isAlive } from "../runtime/process-alive.ts";

export interface FenceState {
  /** The agent that renews the Lease. */
  pid: number;
  host: string;
  cluster: string;
  libvirtUri: string;
  /** Epoch ms by which the HA guests must be off unless the Lease was renewed again. */
  deadline: number;
  /** UIDs of the HA VMs whose domains may be running here (added before each start). */
  haDomains: string[];
}

/** What the watchdog records once it has fenced, for the agent to report when it can again. */
export interface FenceRecord {
  at: number;
  deadline: number;
  domains: string[];
  how: "destroyed" | "agent-killed";
}

export const STATE_FILE = "state.json";
export const FENCED_FILE = "fenced.json";
export const WATCHDOG_PID_FILE = "watchdog.pid";

/**
 * The agent fences a quarter of the Lease (at least a second) before the Lease expires, and the
 * fabric restarts its VMs elsewhere only past the expiry plus the host grace: between the two lies
 * the margin that makes "never twice" hold with clocks a few seconds apart.
 */
export function fenceDeadline(renewedAtMs: number, leaseDurationMs: number): number {
  return renewedAtMs + leaseDurationMs - Math.max(1_000, Math.floor(leaseDurationMs / 4));
}

export type WatchdogStep =
  /** The deadline is ahead (or the agent never renewed yet). */
  | { kind: "wait" }
  /** Past the deadline: power off the HA guests (on a simulated host, kill the agent holding them). */
  | { kind: "fence"; killAgent: boolean; domains: string[] }
  /** The agent is gone and its guests are fenced: nothing is left to watch. */
  | { kind: "exit" };

/** Pure: the watchdog's next step from the state the agent last wrote. */
export function watchdogStep(
  state: FenceState | undefined,
  now: number,
  agentAlive: boolean,
  fencedDeadline: number | undefined,
): WatchdogStep {
  if (!state) return { kind: "exit" };
  if (now < state.deadline) return { kind: "wait" };
  if (fencedDeadline === state.deadline && !agentAlive) return { kind: "exit" };
  // Repeated while the deadline is past: a destroy may race a start that was already under way.
  const simulated = state.libvirtUri.startsWith("test:");
  // With no HA guest to fence, a simulated host's agent is left alone (nothing would restart it).
  return {
    kind: "fence",
    killAgent: simulated && agentAlive && state.haDomains.length > 0,
    domains: state.haDomains,
  };
}

export async function readJson<T>(dir: string, file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, file), "utf8")) as T;
  } catch {
    return undefined;
  }
}

/** Replaces the file in one step: a reader sees the old content or the new, never half. */
export async function writeJson(dir: string, file: string, value: unknown): Promise<void> {
  const temporary = join(dir, `.${file}.${process.pid}`);
  await writeFile(temporary, JSON.stringify(value));
  await rename(temporary, join(dir, file));
}

/**
 * Ends a host's watchdog at once, for a harness tearing a whole cloud down (its agents already
 * stopped): otherwise it lives until the deadline passes and it has fenced.
 */
export async function stopWatchdog(dir: string, timeoutMs = 10_000): Promise<void> {
  const pid = await readJson<number>(dir, WATCHDOG_PID_FILE);
  if (pid === undefined) return;
  try {
    // A stale pid file may name a reused pid: only a watchdog of this directory is killed.
    const command = await readFile(`/proc/${pid}/cmdline`, "utf8");
    if (!command.includes("fence-watchdog") || !command.includes(`--dir=${dir}`)) return;
    process.kill(pid, "SIGKILL");
  } catch {
    return; // already gone
  }
  const end = Date.now() + timeoutMs;
  while (isAlive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
}

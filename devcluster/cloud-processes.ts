// The Stratus programs (operator, API component, host agent) as processes of this machine: the
// script each runs, starting one with a health port of its own, telling one from a stranger by
// pid, and the host agent's --teardown. `stratus up` and the benchmarks start them this way.
import { type ChildProcess, execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { isAlive } from "../runtime/process-alive.ts";
import { pollUntil } from "../runtime/time.ts";
import { ControlPlaneSetupError } from "./binaries.ts";
import { freePort } from "./ports.ts";
import { launch, tail } from "./processes.ts";

const run = promisify(execFile);

/** The repository's root, where the programs' scripts are. */
export const PROJECT_ROOT = fileURLToPath(new URL("..", import.meta.url));

export const CLOUD_PROCESSES = ["operator", "apiserver", "host-agent"] as const;
export type CloudProcess = (typeof CLOUD_PROCESSES)[number];
export const SCRIPTS: Record<CloudProcess, string> = {
  operator: "operator/main.ts",
  apiserver: "apiserver/main.ts",
  "host-agent": "host-agent/main.ts",
};

export interface LaunchedComponent {
  child: ChildProcess;
  pid: number;
  healthPort: number;
  /** Resolves once /healthz answers; rejects with the end of the log if the process exits first. */
  ready: Promise<void>;
}

/**
 * Starts a Stratus process (`operator/main.ts`, …) on this Node, in its own process group, output
 * appended to `logPath`, with a health port of its own.
 */
export async function launchComponent(options: {
  script: string;
  args: string[];
  logPath: string;
  env?: NodeJS.ProcessEnv;
}): Promise<LaunchedComponent> {
  const healthPort = await freePort();
  const child = await launch(
    process.execPath,
    [join(PROJECT_ROOT, options.script), ...options.args, `--health-address=127.0.0.1:${healthPort}`],
    PROJECT_ROOT,
    options.logPath,
    options.script,
    options.env,
  );
  const pid = child.pid as number;
  const ready = waitForSetup(`${options.script} to serve /healthz`, 60_000, async () => {
    if (!isAlive(pid))
      throw new ControlPlaneSetupError(
        `${options.script} exited during start-up. The end of ${options.logPath}:\n${await tail(options.logPath, 20)}`,
      );
    return (await fetch(`http://127.0.0.1:${healthPort}/healthz`).catch(() => undefined))?.ok ?? false;
  });
  return { child, pid, healthPort, ready };
}

/**
 * `stratus-host-agent --teardown` on this machine: the Stratus domains (shut down within
 * `shutdownGraceSeconds`), networks and pool leave libvirt. Returns what the agent says it removed.
 */
export async function tearDownHost(
  libvirtUri: string,
  shutdownGraceSeconds: number,
  agent: { hostName: string; kubeconfig: string },
): Promise<string> {
  const { stdout } = await run(
    process.execPath,
    [
      join(PROJECT_ROOT, SCRIPTS["host-agent"]),
      "--teardown",
      `--libvirt-uri=${libvirtUri}`,
      `--shutdown-grace=${shutdownGraceSeconds}`,
      `--host-name=${agent.hostName}`,
      `--kubeconfig=${agent.kubeconfig}`,
    ],
    { env: { ...process.env, STRATUS_LOG_LEVEL: "warn" } },
  );
  return stdout.trim();
}

/** Whether `pid` runs program `name` of this checkout (a recorded pid may belong to another since). */
export function isStratusProcess(pid: number, name: CloudProcess): boolean {
  if (!isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8")
      .split("\0")
      .includes(join(PROJECT_ROOT, SCRIPTS[name]));
  } catch {
    return false;
  }
}

/** Polls until `probe` holds; a timeout is a set-up error the CLI reports in one line. */
export function waitForSetup(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  return pollUntil(what, probe, {
    timeoutMs,
    intervalMs: 500,
    timeoutError: (message) => new ControlPlaneSetupError(message),
  });
}

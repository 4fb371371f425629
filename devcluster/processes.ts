// Starting and stopping the processes of the local control plane and cloud: in their own process
// group with output appended to a log, and stopped by pid without ever signalling a stranger.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { isAlive } from "../runtime/process-alive.ts";
import { ControlPlaneSetupError } from "./binaries.ts";

/** Starts a control-plane binary in its own process group, output appended to its log. */
export async function launch(
  command: string,
  args: string[],
  cwd: string,
  logPath: string,
  what: string,
  env?: NodeJS.ProcessEnv,
): Promise<ChildProcess> {
  const log = openSync(logPath, "a");
  const child = spawn(command, args, {
    cwd,
    ...(env ? { env } : {}),
    stdio: ["ignore", log, log],
    // Its own process group: a Ctrl-C meant for a test run does not kill etcd under the API server.
    detached: true,
  });
  closeSync(log);
  await new Promise<void>((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", (error) =>
      reject(new ControlPlaneSetupError(`Cannot start ${what} (${command}): ${error.message}`)),
    );
  });
  return child;
}

export async function terminate(
  pid: number,
  child: ChildProcess | undefined,
  graceMs = 10_000,
): Promise<void> {
  // A child known to have exited is never signalled: its pid may belong to another process now.
  if (child && (child.exitCode !== null || child.signalCode !== null)) return;
  if (!isAlive(pid)) return;
  const exited =
    child && child.exitCode === null && child.signalCode === null
      ? new Promise((r) => child.once("exit", r))
      : undefined;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(50);
  if (isAlive(pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  if (exited) await exited;
  while (isAlive(pid)) await sleep(20);
}

export async function tail(path: string, lines: number): Promise<string> {
  try {
    return (await readFile(path, "utf8")).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

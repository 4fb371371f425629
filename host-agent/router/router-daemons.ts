// The processes a router runs in its namespace (dnsmasq, the metadata service): found by their pid
// file and command line (a stale file may name a reused pid), and stopped until they are gone.
import { readFile, rename, writeFile } from "node:fs/promises";
import { HostProblem } from "../problem.ts";

/** The pid in `pidFile` if that process runs and its command line holds `command`. */
export async function runningPid(pidFile: string, command: string): Promise<number | undefined> {
  const pid = Number((await readFile(pidFile, "utf8").catch(() => "")).trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    return cmdline.includes(command) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** SIGTERM, then waits (up to 5 s) until the process is gone and its sockets free. */
export async function stopped(pid: number, what: string): Promise<void> {
  process.kill(pid, "SIGTERM");
  for (let i = 0; i < 50; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new HostProblem("RouterSetupFailed", `${what} (pid ${pid}) did not stop within 5 s`);
}

/** Writes `content` unless the file holds it already (through a temporary name); true when it wrote. */
export async function writeIfChanged(path: string, content: string | Buffer, mode = 0o644): Promise<boolean> {
  const current = await readFile(path).catch(() => undefined);
  if (current?.equals(Buffer.from(content))) return false;
  await writeFile(`${path}.new`, content, { mode });
  await rename(`${path}.new`, path);
  return true;
}

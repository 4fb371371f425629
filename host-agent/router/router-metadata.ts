// A router's metadata service (metadata-server.ts) kept running in its namespace, with each guest's
// files written where it reads them: `<stateDir>/metadata/<guest ip>/latest/...`, root's alone
// (user data may hold secrets). Guests gone from the network lose their directory.
import { spawn } from "node:child_process";
import { mkdir, readdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runningPid, stopped, writeIfChanged } from "./router-daemons.ts";

const SERVER = fileURLToPath(new URL("./metadata-server.ts", import.meta.url));

export interface RouterMetadata {
  namespace: string;
  stateDir: string;
  /** The guests' gateway: where the service listens (port 80). */
  listen: string;
  /** Each guest's files by its address. */
  guests: ReadonlyMap<string, ReadonlyMap<string, Buffer>>;
}

const pidFile = (stateDir: string) => join(stateDir, "metadata.pid");

export async function ensureMetadata(metadata: RouterMetadata): Promise<void> {
  const root = join(metadata.stateDir, "metadata");
  await mkdir(root, { recursive: true, mode: 0o700 });
  for (const [guest, files] of metadata.guests)
    for (const [path, content] of files) {
      const file = join(root, guest, path);
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      await writeIfChanged(file, content, 0o600);
    }
  for (const stale of (await readdir(root)).filter((guest) => !metadata.guests.has(guest)))
    await rm(join(root, stale), { recursive: true, force: true });
  if (await runningPid(pidFile(metadata.stateDir), SERVER)) return;
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      metadata.namespace,
      process.execPath,
      SERVER,
      `--root=${root}`,
      `--listen=${metadata.listen}`,
      `--pid-file=${pidFile(metadata.stateDir)}`,
    ],
    { detached: true, stdio: "ignore" },
  );
  child.unref();
}

export async function stopMetadata(stateDir: string): Promise<void> {
  const pid = await runningPid(pidFile(stateDir), SERVER);
  if (pid) await stopped(pid, "the metadata service");
}

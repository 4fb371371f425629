// The watchdog as a process: what it does when the agent is gone and libvirt cannot be reached.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isAlive } from "../runtime/process-alive.ts";
import { pollUntil } from "../runtime/time.ts";
import {
  FENCED_FILE,
  type FenceRecord,
  type FenceState,
  readJson,
  STATE_FILE,
  stopWatchdog,
  WATCHDOG_PID_FILE,
  writeJson,
} from "./fence-state.ts";

const WATCHDOG = new URL("./fence-watchdog.ts", import.meta.url).pathname;
const dirs: string[] = [];
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) child.kill("SIGKILL");
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** A fence directory whose agent is dead and whose deadline has passed. */
async function abandonedHost(haDomains: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "stratus-fence-"));
  dirs.push(dir);
  const dead = spawnSync("true").pid as number;
  const state: FenceState = {
    pid: dead,
    host: "h1",
    cluster: "c1",
    // No daemon listens there: every connection attempt fails.
    libvirtUri: `qemu+unix:///system?socket=${join(dir, "no-libvirtd.sock")}`,
    deadline: Date.now() - 1_000,
    haDomains,
  };
  await writeJson(dir, STATE_FILE, state);
  return dir;
}

/** The watchdog as its agent starts it; `output()` is what it has logged so far. */
function startWatchdog(dir: string): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, [WATCHDOG, `--dir=${dir}`], { stdio: ["ignore", "pipe", "pipe"] });
  let logged = "";
  child.stdout.on("data", (chunk: Buffer) => {
    logged += chunk.toString();
  });
  children.push(child);
  return Object.assign(child, { output: () => logged });
}

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

describe("fence watchdog", () => {
  it("exits once its dead agent had no HA guest, without needing libvirt", async () => {
    const dir = await abandonedHost([]);
    const child = startWatchdog(dir);
    await pollUntil("the watchdog to exit", async () => exited(child), { timeoutMs: 15_000 });
    expect(child.exitCode).toBe(0);
    expect(await readJson<FenceRecord>(dir, FENCED_FILE)).toMatchObject({ domains: [] });
    expect(await readJson<number>(dir, WATCHDOG_PID_FILE)).toBeUndefined();
  });

  it("keeps trying while it cannot power off an HA guest, until a harness stops it", async () => {
    const dir = await abandonedHost(["u1"]);
    const child = startWatchdog(dir);
    // Its third failed attempt: it neither gave up nor claimed a fencing it could not do.
    await pollUntil(
      "three attempts to power the guest off",
      async () => (child.output().match(/could not power off the HA guests/g) ?? []).length >= 3,
      { timeoutMs: 15_000 },
    );
    expect(exited(child)).toBe(false);
    expect(await readJson(dir, FENCED_FILE)).toBeUndefined();
    await stopWatchdog(dir);
    expect(isAlive(child.pid as number)).toBe(false);
  });

  it("leaves a process alone whose pid a stale pid file names", async () => {
    const dir = await abandonedHost([]);
    const bystander = spawn("sleep", ["30"]);
    children.push(bystander);
    await writeJson(dir, WATCHDOG_PID_FILE, bystander.pid);
    await stopWatchdog(dir);
    expect(isAlive(bystander.pid as number)).toBe(true);
  });
});

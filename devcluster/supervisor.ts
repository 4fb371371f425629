// The supervisors `stratus up` leaves behind (one for the control plane, one for the cloud): each runs
// its components and starts again any that exits, with exponential backoff, recording what happened
// in a state file that `stratus status` reads. Run as `node devcluster/supervisor.ts --dir=DIR`; DIR holds its spec,
// state and pid file.
//
// A supervised process carries STRATUS_SUPERVISED=<dir>#<name> in its environment. That tag, not a
// pid from a file, is how a process is known as ours: a pid may be reused, and a supervisor killed
// between spawning a child and recording it leaves a child no file names. Components outlive a
// SIGKILLed supervisor (the cloud keeps serving); the next supervisor adopts the tagged processes
// whose command line is still the one its spec asks for and stops any other tagged process.
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { isAlive } from "../runtime/process-alive.ts";
import { ControlPlaneSetupError } from "./binaries.ts";
import { launch, tail, terminate } from "./processes.ts";
import { describeExit, formatDuration } from "./supervision-status.ts";

const SUPERVISOR_SCRIPT = fileURLToPath(import.meta.url);
const TAG_VARIABLE = "STRATUS_SUPERVISED";
/** How often an adopted process (not our child: no exit event) is checked. */
const ADOPTED_POLL_MS = 500;

export interface SupervisedCommand {
  name: string;
  command: string;
  args: string[];
  cwd: string;
  /** Appended to, across restarts: the component's one log. */
  logPath: string;
  env?: Record<string, string>;
}

export interface BackoffPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
  /** A component that stayed up this long is healthy again: its next failure waits initialDelayMs. */
  resetAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = {
  initialDelayMs: 1_000,
  maxDelayMs: 30_000,
  resetAfterMs: 60_000,
};

export interface SupervisorSpec {
  /** Started in this order, stopped in the reverse one. */
  components: SupervisedCommand[];
  backoff: BackoffPolicy;
  stopGraceMs: number;
}

export interface ComponentStatus {
  state: "running" | "backing-off" | "stopped";
  pid: number | null;
  restarts: number;
  /** Exits since the component last stayed up resetAfterMs; sets the next delay. */
  consecutiveFailures: number;
  lastStartAt: string | null;
  /** code and signal are both null when an adopted process ended: only a parent learns its status. */
  lastExit: { code: number | null; signal: string | null; at: string } | null;
  nextStartAt: string | null;
}

export interface SupervisorState {
  supervisorPid: number;
  components: Record<string, ComponentStatus>;
}

export function supervisorPaths(dir: string) {
  return {
    spec: join(dir, "spec.json"),
    state: join(dir, "state.json"),
    pidFile: join(dir, "supervisor.pid"),
    log: join(dir, "supervisor.log"),
  };
}

/** The delay before the next start of a component that just exited after `uptimeMs`. */
export function nextRestart(
  consecutiveFailures: number,
  uptimeMs: number,
  policy: BackoffPolicy,
): { consecutiveFailures: number; delayMs: number } {
  const failures = uptimeMs >= policy.resetAfterMs ? 1 : consecutiveFailures + 1;
  const delayMs = Math.min(policy.initialDelayMs * 2 ** (failures - 1), policy.maxDelayMs);
  return { consecutiveFailures: failures, delayMs };
}

export function initialStatus(): ComponentStatus {
  return {
    state: "stopped",
    pid: null,
    restarts: 0,
    consecutiveFailures: 0,
    lastStartAt: null,
    lastExit: null,
    nextStartAt: null,
  };
}

/** Written to a temporary file and renamed: a reader, or a crash, never sees half a file. */
function writeFileAtomically(path: string, text: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, text);
  renameSync(temporary, path);
}

export function writeJsonAtomically(path: string, value: unknown): void {
  writeFileAtomically(path, `${JSON.stringify(value, null, 2)}\n`);
}

export function readJsonFile<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new ControlPlaneSetupError(`${path} is damaged: ${(error as Error).message}`);
  }
}

export function readSupervisorState(dir: string): SupervisorState | undefined {
  return readJsonFile<SupervisorState>(supervisorPaths(dir).state);
}

export interface Supervision<Name extends string> {
  supervisorPid: number | undefined;
  components: Partial<Record<Name, ComponentStatus>>;
}

/** The recorded state, where a component whose process is gone (`isOurs` says) shows as stopped. */
export function readSupervision<Name extends string>(
  dir: string,
  isOurs: (pid: number, name: Name) => boolean,
): Supervision<Name> {
  const components: Partial<Record<string, ComponentStatus>> = { ...readSupervisorState(dir)?.components };
  for (const [name, status] of Object.entries(components))
    if (status && status.pid !== null && !isOurs(status.pid, name as Name))
      components[name] = { ...status, state: "stopped", pid: null };
  return { supervisorPid: runningSupervisor(dir), components };
}

/** The pid of the supervisor running for `dir`, checked by its command line, not only its pid file. */
export function runningSupervisor(dir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(supervisorPaths(dir).pidFile, "utf8").trim());
  } catch {
    return undefined;
  }
  return isSupervisorOf(pid, dir) ? pid : undefined;
}

function isSupervisorOf(pid: number, dir: string): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return false;
  const argv = commandLineOf(pid);
  return argv?.includes(SUPERVISOR_SCRIPT) === true && argv.includes(`--dir=${dir}`);
}

function commandLineOf(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, -1);
  } catch {
    return undefined;
  }
}

/**
 * Live processes tagged as components of the supervisor of `dir` (found through /proc), and the
 * processes those started (they inherit the tag; `topLevel` is false for them).
 */
export function supervisedProcesses(
  dir: string,
): { pid: number; name: string; argv: string[]; topLevel: boolean }[] {
  const prefix = `${TAG_VARIABLE}=${dir}#`;
  const found = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const tag = readFileSync(`/proc/${pid}/environ`, "utf8")
        .split("\0")
        .find((variable) => variable.startsWith(prefix));
      const argv = commandLineOf(pid);
      if (tag && argv && isAlive(pid))
        found.push({ pid, ppid: parentOf(pid), name: tag.slice(prefix.length), argv });
    } catch {} // another user's process, or gone meanwhile
  }
  const tagged = new Set(found.map((candidate) => candidate.pid));
  return found.map(({ ppid, ...candidate }) => ({ ...candidate, topLevel: !tagged.has(ppid) }));
}

function parentOf(pid: number): number {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so count from the last ")".
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/**
 * Starts the supervisor of `dir` detached (it outlives this process) and waits until it has
 * written its state. Refused while one runs: two would start every component twice.
 */
export async function startSupervisor(
  dir: string,
  spec: SupervisorSpec,
  timeoutMs = 30_000,
): Promise<number> {
  const existing = runningSupervisor(dir);
  if (existing !== undefined)
    throw new ControlPlaneSetupError(`a supervisor already runs for ${dir} (pid ${existing}); stop it first`);
  const paths = supervisorPaths(dir);
  writeJsonAtomically(paths.spec, spec);
  const log = openSync(paths.log, "a");
  const child = spawn(process.execPath, [SUPERVISOR_SCRIPT, `--dir=${dir}`], {
    cwd: dir,
    stdio: ["ignore", log, log],
    detached: true,
  });
  closeSync(log);
  child.unref();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pid = runningSupervisor(dir);
    const inCharge = pid !== undefined && readSupervisorState(dir)?.supervisorPid === pid;
    // Ours, or another started at the same moment once ours has left: never two still starting.
    if (inCharge && (pid === child.pid || child.exitCode !== null)) return pid;
    if ((child.exitCode !== null && pid === undefined) || Date.now() > deadline) {
      throw new ControlPlaneSetupError(
        `the supervisor of ${dir} did not start. The end of ${paths.log}:\n${await tail(paths.log, 10)}`,
      );
    }
    await sleep(50);
  }
}

/**
 * Stops the supervisor first (so nothing is started again), which stops its components; then
 * stops any tagged process still alive (e.g. those of a SIGKILLed supervisor). Leaves none.
 */
export async function stopSupervision(dir: string, graceMs = 30_000): Promise<void> {
  const supervisor = runningSupervisor(dir);
  if (supervisor !== undefined) await terminate(supervisor, undefined, graceMs + 10_000);
  for (const leftover of supervisedProcesses(dir)) await terminate(leftover.pid, undefined, graceMs);
  rmSync(supervisorPaths(dir).pidFile, { force: true });
}

/** A component under supervision: its child (or adopted pid), its status and its restart timer. */
class SupervisedComponent {
  private child: ChildProcess | undefined;
  private adoptedPoll: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private stopping = false;

  private readonly supervisor: Supervisor;
  readonly command: SupervisedCommand;
  readonly status: ComponentStatus;

  constructor(supervisor: Supervisor, command: SupervisedCommand, status: ComponentStatus) {
    this.supervisor = supervisor;
    this.command = command;
    this.status = status;
  }

  start(): Promise<void> {
    this.restartTimer = undefined;
    if (this.stopping) return Promise.resolve();
    this.starting = this.spawnChild().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async spawnChild(): Promise<void> {
    const { command, args, cwd, logPath, env, name } = this.command;
    const tag = { [TAG_VARIABLE]: `${this.supervisor.dir}#${name}` };
    this.appendToLog(`starting ${name}`);
    let child: ChildProcess;
    try {
      child = await launch(command, args, cwd, logPath, name, { ...process.env, ...env, ...tag });
    } catch (error) {
      this.appendToLog((error as Error).message);
      this.status.lastStartAt = new Date().toISOString(); // a failed start was up for no time
      this.exited(null, null);
      return;
    }
    this.child = child;
    child.once("exit", (code, signal) => {
      this.child = undefined;
      this.exited(code, signal);
    });
    this.running(child.pid as number, new Date().toISOString());
  }

  /** Takes over a process a previous supervisor started; its end is noticed by polling. */
  adopt(pid: number, startedAt: string | null): void {
    this.appendToLog(`adopting ${this.command.name} (pid ${pid}), left by a previous supervisor`);
    this.running(pid, startedAt ?? new Date().toISOString());
    this.adoptedPoll = setInterval(() => {
      if (isAlive(pid)) return;
      clearInterval(this.adoptedPoll);
      this.adoptedPoll = undefined;
      this.exited(null, null);
    }, ADOPTED_POLL_MS);
  }

  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    clearInterval(this.adoptedPoll);
    await this.starting; // a child being spawned now is recorded, then stopped below
    if (this.status.pid !== null) await terminate(this.status.pid, this.child, graceMs);
    Object.assign(this.status, { state: "stopped", pid: null, nextStartAt: null });
    this.supervisor.save();
  }

  private running(pid: number, startedAt: string): void {
    Object.assign(this.status, { state: "running", pid, lastStartAt: startedAt, nextStartAt: null });
    this.supervisor.save();
  }

  private exited(code: number | null, signal: string | null): void {
    const now = Date.now();
    const uptimeMs = this.status.lastStartAt ? now - Date.parse(this.status.lastStartAt) : 0;
    this.status.lastExit = { code, signal, at: new Date(now).toISOString() };
    this.status.pid = null;
    if (this.stopping) return;
    const next = nextRestart(this.status.consecutiveFailures, uptimeMs, this.supervisor.spec.backoff);
    this.appendToLog(
      `${this.command.name} exited (${describeExit(code, signal)}) after ${formatDuration(uptimeMs)}; ` +
        `starting it again in ${formatDuration(next.delayMs)}`,
    );
    Object.assign(this.status, {
      state: "backing-off",
      consecutiveFailures: next.consecutiveFailures,
      restarts: this.status.restarts + 1,
      nextStartAt: new Date(now + next.delayMs).toISOString(),
    });
    this.supervisor.save();
    this.restartTimer = setTimeout(() => void this.start(), next.delayMs);
  }

  /** The supervisor's word goes into the component's own log, where its crash is. */
  private appendToLog(message: string): void {
    try {
      writeFileSync(this.command.logPath, `[stratus supervisor ${new Date().toISOString()}] ${message}\n`, {
        flag: "a",
      });
    } catch {}
  }
}

class Supervisor {
  readonly dir: string;
  readonly spec: SupervisorSpec;
  private readonly previous: SupervisorState | undefined;
  private readonly components: SupervisedComponent[];

  /** Counts carry over from the previous supervisor's state; what runs is found again in run(). */
  constructor(dir: string, spec: SupervisorSpec, previous: SupervisorState | undefined) {
    this.dir = dir;
    this.spec = spec;
    this.previous = previous;
    this.components = spec.components.map((command) => {
      const carried = { ...initialStatus(), ...previous?.components[command.name] };
      return new SupervisedComponent(this, command, {
        ...carried,
        state: "stopped",
        pid: null,
        nextStartAt: null,
      });
    });
  }

  /** Adopts the tagged processes the spec still describes, stops the others, starts the rest. */
  async run(): Promise<void> {
    const adopted = new Set<string>();
    // A component's own children (a host agent's qemu-img) are its business, not the spec's.
    for (const found of supervisedProcesses(this.dir).filter((candidate) => candidate.topLevel)) {
      const component = this.components.find((c) => c.command.name === found.name);
      const wanted = component && [component.command.command, ...component.command.args];
      if (component && !adopted.has(found.name) && sameArgv(found.argv, wanted ?? [])) {
        adopted.add(found.name);
        const recorded = this.previous?.components[found.name];
        component.adopt(found.pid, recorded?.pid === found.pid ? recorded.lastStartAt : null);
      } else {
        log(`stopping pid ${found.pid} (${found.name}): not what the spec runs now, or a second copy`);
        await terminate(found.pid, undefined, this.spec.stopGraceMs);
      }
    }
    for (const component of this.components)
      if (!adopted.has(component.command.name)) await component.start();
  }

  async stop(): Promise<void> {
    for (const component of [...this.components].reverse()) await component.stop(this.spec.stopGraceMs);
  }

  save(): void {
    const components = Object.fromEntries(this.components.map((c) => [c.command.name, c.status]));
    writeJsonAtomically(supervisorPaths(this.dir).state, { supervisorPid: process.pid, components });
  }
}

function sameArgv(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((value, index) => value === b[index]);
}

/**
 * One supervisor per directory: an abstract Unix socket named after it is bound by one process at
 * most, and the kernel frees it when that process dies, even by SIGKILL, where a pid file goes stale.
 */
function holdSupervisorLock(dir: string): Promise<boolean> {
  const name = `\0stratus-supervisor-${createHash("sha256").update(dir).digest("hex").slice(0, 40)}`;
  return new Promise((resolve, reject) => {
    const server = createServer((connection) => connection.destroy());
    server.once("error", (error: NodeJS.ErrnoException) =>
      error.code === "EADDRINUSE" ? resolve(false) : reject(error),
    );
    server.listen(name, () => resolve(true));
  });
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { dir: { type: "string" } } });
  if (!values.dir) throw new Error("usage: supervisor.ts --dir=DIR (DIR/spec.json says what to run)");
  const dir = values.dir;
  if (!(await holdSupervisorLock(dir))) {
    log(`a supervisor already runs for ${dir} (pid ${runningSupervisor(dir)}): leaving it in charge`);
    return;
  }
  writeFileAtomically(supervisorPaths(dir).pidFile, `${process.pid}\n`);
  const spec = readJsonFile<SupervisorSpec>(supervisorPaths(dir).spec);
  if (!spec) throw new Error(`${supervisorPaths(dir).spec} is missing`);
  const supervisor = new Supervisor(dir, spec, readSupervisorState(dir));
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping the components`);
    void supervisor.stop().finally(() => {
      if (runningSupervisor(dir) === process.pid) rmSync(supervisorPaths(dir).pidFile, { force: true });
      log("stopped");
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  supervisor.save();
  log(`supervising ${spec.components.map((c) => c.name).join(", ")} (pid ${process.pid})`);
  await supervisor.run();
}

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} ${message}\n`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

if (process.argv[1] === SUPERVISOR_SCRIPT)
  main(process.argv.slice(2)).catch((error: unknown) => {
    log(`supervisor failed: ${(error as Error).stack ?? String(error)}`);
    process.exit(1);
  });

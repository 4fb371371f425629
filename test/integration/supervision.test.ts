// The supervisor of `stratus up`, run for real over tiny node scripts: a killed child comes back, a
// crash-looping one backs off, stopping leaves nothing, and a SIGKILLed supervisor followed by a
// new one never doubles a child.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { isAlive, LocalControlPlane } from "../../devcluster/controlplane.ts";
import { COMPONENTS } from "../../devcluster/controlplane-components.ts";
import {
  readSupervisorState,
  runningSupervisor,
  type SupervisorSpec,
  startSupervisor,
  stopSupervision,
  supervisedProcesses,
  supervisorPaths,
} from "../../devcluster/supervisor.ts";
import { waitFor } from "./support.ts";

describe("the supervisor of stratus up's processes", () => {
  let dir: string;
  let spec: SupervisorSpec;
  const steady = () => readSupervisorState(dir)?.components.steady;
  const instancesOf = (name: string) => supervisedProcesses(dir).filter((p) => p.name === name && p.topLevel);
  const crashStarts = () =>
    existsSync(join(dir, "crashes"))
      ? readFileSync(join(dir, "crashes"), "utf8").trim().split("\n").map(Number)
      : [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stratus-supervision-"));
    const node = (name: string, script: string) => ({
      name,
      command: process.execPath,
      args: ["-e", script],
      cwd: dir,
      logPath: join(dir, `${name}.log`),
    });
    spec = {
      components: [
        node("steady", "setInterval(() => {}, 1 << 30)"),
        // Records each start, then fails at once: a crash loop.
        node(
          "crashing",
          `require("node:fs").appendFileSync(${JSON.stringify(join(dir, "crashes"))}, Date.now() + "\\n"); process.exit(3)`,
        ),
      ],
      backoff: { initialDelayMs: 250, maxDelayMs: 4_000, resetAfterMs: 10_000 },
      stopGraceMs: 5_000,
    };
  });
  afterAll(async () => {
    await stopSupervision(dir, 5_000);
    await rm(dir, { recursive: true, force: true });
  });

  it("starts each child once and refuses a second supervisor", async () => {
    // A stale pid file naming a live process that is no supervisor (this test's) is not obeyed.
    writeFileSync(supervisorPaths(dir).pidFile, `${process.pid}\n`);
    expect(runningSupervisor(dir)).toBeUndefined();
    const supervisor = await startSupervisor(dir, spec);
    await waitFor("the steady child to run", () => steady()?.state === "running");
    expect(instancesOf("steady")).toHaveLength(1);
    await expect(startSupervisor(dir, spec)).rejects.toThrow(/already runs/);
    expect(runningSupervisor(dir)).toBe(supervisor);
    expect(readFileSync(supervisorPaths(dir).pidFile, "utf8").trim()).toBe(String(supervisor));
  });

  it("starts a SIGKILLed child again within seconds and counts the restart", async () => {
    const before = steady();
    expect(before).toMatchObject({ state: "running", restarts: 0 });
    process.kill(before?.pid as number, "SIGKILL");
    const after = await waitFor(
      "the steady child to run again",
      () => {
        const now = steady();
        return now?.state === "running" && now.pid !== before?.pid ? now : undefined;
      },
      { timeoutMs: 10_000 },
    );
    expect(after).toMatchObject({ restarts: 1, lastExit: { code: null, signal: "SIGKILL" } });
    expect(isAlive(after.pid as number)).toBe(true);
    expect(instancesOf("steady").map((p) => p.pid)).toEqual([after.pid]);
    expect(readFileSync(join(dir, "steady.log"), "utf8")).toContain("steady exited (signal SIGKILL)");
  });

  it("backs off a crash-looping child: each wait longer than the one before", async () => {
    const starts = await waitFor("five starts of the crashing child", () => {
      const found = crashStarts();
      return found.length >= 5 ? found : undefined;
    });
    const gaps = starts.slice(1, 5).map((start, index) => start - (starts[index] as number));
    // Each start waits at least its backoff (250, 500, 1000, 2000 ms) after the previous run ended,
    // a bound a slow machine cannot break; and the waits grow (a fixed delay keeps the gaps equal).
    gaps.forEach((gap, index) => {
      expect(gap, `gaps ${gaps}`).toBeGreaterThanOrEqual(250 * 2 ** index);
    });
    expect((gaps[3] as number) - (gaps[0] as number), `gaps ${gaps}`).toBeGreaterThan(1_000);
    const crashing = readSupervisorState(dir)?.components.crashing;
    expect(crashing?.restarts).toBeGreaterThanOrEqual(4);
    expect(crashing?.lastExit?.code).toBe(3);
  });

  it("after a SIGKILLed supervisor, a new one adopts the children: still one of each", async () => {
    const oldSupervisor = runningSupervisor(dir) as number;
    const steadyPid = steady()?.pid;
    process.kill(oldSupervisor, "SIGKILL");
    await waitFor("the supervisor to die", () => !isAlive(oldSupervisor));
    expect(isAlive(steadyPid as number)).toBe(true); // the cloud keeps serving meanwhile
    const newSupervisor = await startSupervisor(dir, spec);
    expect(newSupervisor).not.toBe(oldSupervisor);
    await waitFor("the crashing child to be started again", () => crashStarts().length >= 7, {
      timeoutMs: 30_000,
    });
    // Sampled while the crash loop goes on: never a second steady child.
    for (let sample = 0; sample < 10; sample++) {
      expect(instancesOf("steady").map((p) => p.pid)).toEqual([steadyPid]);
      expect(instancesOf("crashing").length).toBeLessThanOrEqual(1);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(steady()).toMatchObject({ state: "running", pid: steadyPid, restarts: 1 });
    // Its end is still noticed although it is not the new supervisor's child.
    process.kill(steadyPid as number, "SIGKILL");
    const restarted = await waitFor(
      "the adopted child to be started again",
      () => {
        const now = steady();
        return now?.state === "running" && now.pid !== steadyPid ? now : undefined;
      },
      { timeoutMs: 10_000 },
    );
    expect(restarted.restarts).toBe(2);
  });

  it("stopping the supervisor leaves no child and no pid file", async () => {
    const supervisor = runningSupervisor(dir) as number;
    const children = supervisedProcesses(dir).map((p) => p.pid);
    await stopSupervision(dir, 5_000);
    expect(isAlive(supervisor)).toBe(false);
    expect(children.filter(isAlive)).toEqual([]);
    expect(supervisedProcesses(dir)).toEqual([]);
    expect(existsSync(supervisorPaths(dir).pidFile)).toBe(false);
    expect(readSupervisorState(dir)?.components.steady?.state).toBe("stopped");
  });

  it("two supervisors started at once: one takes charge, the other leaves", async () => {
    const started = await Promise.all([startSupervisor(dir, spec), startSupervisor(dir, spec)]);
    expect(started[0]).toBe(started[1]);
    await waitFor("the steady child to run", () => steady()?.state === "running");
    expect(supervisorsOf(dir)).toEqual([started[0]]);
    expect(instancesOf("steady")).toHaveLength(1);
  });
});

describe("a detached control plane (stratus up's) under its supervisor", () => {
  let controlPlane: LocalControlPlane;
  beforeAll(async () => {
    controlPlane = await LocalControlPlane.start({
      binaries: inject("binaries"),
      unsafeNoFsync: true,
      detached: true,
    });
  });
  afterAll(async () => {
    await controlPlane?.stop();
  });

  it("brings back a SIGKILLed etcd, kube-apiserver and kube-controller-manager, and stops leaving none", async () => {
    const namespaces = () => controlPlane.kubeConfig.makeApiClient(CoreV1Api).listNamespace();
    expect(controlPlane.supervision().supervisorPid).toBeDefined();
    const killed = COMPONENTS.map((component) => controlPlane.pid(component) as number);
    for (const pid of killed) process.kill(pid, "SIGKILL");
    await waitFor(
      "each to run again",
      () =>
        COMPONENTS.every((component) => {
          const status = controlPlane.supervision().components[component];
          return (
            status?.state === "running" && !killed.includes(status.pid as number) && status.restarts === 1
          );
        }),
      { timeoutMs: 30_000 },
    );
    expect(controlPlane.running()).toEqual([...COMPONENTS]);
    await waitFor("kube-apiserver to serve again", async () => (await namespaces()).items.length > 0);

    const running = COMPONENTS.map((component) => controlPlane.pid(component) as number);
    await controlPlane.stopComponents();
    expect([...killed, ...running].filter(isAlive)).toEqual([]);
    expect(controlPlane.supervision().supervisorPid).toBeUndefined();
    expect(controlPlane.running()).toEqual([]);
  });
});

/** Supervisor processes running for `dir`, by their command line. */
function supervisorsOf(dir: string): number[] {
  return readdirSync("/proc")
    .map(Number)
    .filter((pid) => {
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
        return (
          isAlive(pid) && argv.some((arg) => arg.endsWith("supervisor.ts")) && argv.includes(`--dir=${dir}`)
        );
      } catch {
        return false;
      }
    });
}

#!/usr/bin/env node
// stratus-fence-watchdog: started by a host agent, one per host. Once the deadline the agent last
// wrote has passed (its heartbeat Lease could not be renewed: the agent is cut off, hung, stopped
// or dead), it powers off the host's HA guests before the fabric restarts them elsewhere, and removes
// its routers before the network controller places them elsewhere. On a
// simulated host (libvirt's test driver) the guests live inside the agent, so it kills the agent.
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { isAlive } from "../runtime/process-alive.ts";
import { sleep } from "../runtime/time.ts";
import {
  FENCED_FILE,
  type FenceRecord,
  type FenceState,
  readJson,
  STATE_FILE,
  WATCHDOG_PID_FILE,
  watchdogStep,
  writeJson,
} from "./fence-state.ts";
import { LibvirtConnection, stopEventLoop } from "./libvirt/connection.ts";
import { LibvirtHypervisor } from "./libvirt-hypervisor.ts";
import { removeRouters, routerPrefix } from "./router/router-namespace.ts";

const TICK_MS = 200;

function log(message: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), msg: message, ...fields })}\n`);
}

async function powerOff(state: FenceState, domains: readonly string[]): Promise<string[]> {
  // Nothing to fence needs no hypervisor: a host whose libvirtd is down has no guest to reach.
  if (domains.length === 0) return [];
  const libvirt = await LibvirtConnection.open(state.libvirtUri);
  const hypervisor = new LibvirtHypervisor(libvirt, {
    owner: { cluster: state.cluster, host: state.host },
    poolPath: "",
  });
  const off: string[] = [];
  try {
    for (const uid of domains) {
      const domain = await hypervisor.observe(uid);
      if (!domain || domain.state === "shutoff") continue;
      await hypervisor.powerOff(uid);
      off.push(uid);
    }
  } finally {
    await libvirt.close();
  }
  return off;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { dir: { type: "string" } } });
  const dir = values.dir;
  if (!dir) throw new Error("--dir is required");
  await writeFile(join(dir, WATCHDOG_PID_FILE), String(process.pid));
  log("fence watchdog watching", { dir });
  let fencedDeadline: number | undefined;
  for (;;) {
    const state = await readJson<FenceState>(dir, STATE_FILE);
    const agentAlive = state ? isAlive(state.pid) : false;
    const step = watchdogStep(state, Date.now(), agentAlive, fencedDeadline);
    if (step.kind === "exit") {
      // Hand-over with a new agent: it writes its state, then starts a watchdog unless the pid
      // file names a live one. Removing the file before looking a last time leaves no gap.
      await rm(join(dir, WATCHDOG_PID_FILE), { force: true });
      const last = await readJson<FenceState>(dir, STATE_FILE);
      if (watchdogStep(last, Date.now(), last ? isAlive(last.pid) : false, fencedDeadline).kind === "exit")
        break;
      await writeFile(join(dir, WATCHDOG_PID_FILE), String(process.pid));
      continue;
    }
    if (step.kind === "fence" && state) {
      const firstTime = fencedDeadline !== state.deadline;
      let domains = step.domains;
      if (step.killAgent) process.kill(state.pid, "SIGKILL");
      else {
        try {
          domains = await powerOff(state, step.domains);
        } catch (error) {
          log("could not power off the HA guests; trying again", { err: String(error) });
          await sleep(TICK_MS);
          continue;
        }
      }
      // Its routers too: the network controller places them on other hosts, and their public
      // addresses must not answer from two.
      let routers: string[];
      try {
        routers = await removeRouters(routerPrefix({ cluster: state.cluster, host: state.host }));
      } catch (error) {
        log("could not remove the routers; trying again", { err: String(error) });
        await sleep(TICK_MS);
        continue;
      }
      if (routers.length > 0) log("fenced: removed the host's routers", { routers });
      if (firstTime || domains.length > 0) {
        const earlier = firstTime ? undefined : await readJson<FenceRecord>(dir, FENCED_FILE);
        const record: FenceRecord = {
          at: earlier?.at ?? Date.now(),
          deadline: state.deadline,
          domains: [...new Set([...(earlier?.domains ?? []), ...domains])],
          how: step.killAgent ? "agent-killed" : "destroyed",
        };
        await writeJson(dir, FENCED_FILE, record);
        log("fenced: the heartbeat Lease was not renewed in time", { ...record });
      }
      fencedDeadline = state.deadline;
    }
    await sleep(TICK_MS);
  }
  log("the agent is gone and its HA guests are fenced; exiting");
  await stopEventLoop();
}

await main();

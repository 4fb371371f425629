// What a local control plane records in its directory (state.json: ports, binaries, pids) and
// which of its processes still run: another process (`stratus cluster stop`) reopens it from there.
import { readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isAlive } from "../runtime/process-alive.ts";
import { type ControlPlaneBinaries, ControlPlaneSetupError } from "./binaries.ts";
import { COMPONENTS, type ComponentName } from "./controlplane-components.ts";
import { readSupervisorState } from "./supervisor.ts";

export interface ControlPlaneState {
  ports: { etcdClient: number; etcdPeer: number; apiserver: number };
  binaries: ControlPlaneBinaries;
  pids: Partial<Record<ComponentName, number>>;
  unsafeNoFsync: boolean;
  /** Whether stop() deletes the directory (it was created as a temporary one). */
  ownsDirectory: boolean;
}

const STATE_FILE = "state.json";

export async function readState(dir: string): Promise<ControlPlaneState | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, STATE_FILE), "utf8")) as ControlPlaneState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new ControlPlaneSetupError(
      `${join(dir, STATE_FILE)} is damaged (${(error as Error).message}); delete ${dir} to start afresh.`,
    );
  }
}

export async function saveState(dir: string, state: ControlPlaneState): Promise<void> {
  await writeFile(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
}

export function runningComponents(dir: string, state: ControlPlaneState): ComponentName[] {
  const pids = livePids(dir, state);
  return COMPONENTS.filter((component) => {
    const pid = pids[component];
    return pid !== undefined && isOurProcess(pid, state.binaries, component);
  });
}

/** Where a detached control plane's supervisor keeps its spec, state and pid file. */
export const supervisorDir = (dir: string) => join(dir, "supervisor");

/** The pids recorded at start, or, for a supervised control plane, those its supervisor runs now. */
export function livePids(dir: string, state: ControlPlaneState): Partial<Record<ComponentName, number>> {
  const supervised = readSupervisorState(supervisorDir(dir))?.components;
  if (!supervised) return state.pids;
  return Object.fromEntries(
    COMPONENTS.flatMap((component) => {
      const pid = supervised[component]?.pid;
      return pid == null ? [] : [[component, pid]];
    }),
  );
}

/** A pid from an old state file may since belong to another program; check what it runs. */
export function isOurProcess(pid: number, binaries: ControlPlaneBinaries, component: ComponentName): boolean {
  if (!isAlive(pid)) return false;
  const binary = {
    etcd: binaries.etcd,
    "kube-apiserver": binaries.kubeApiserver,
    "kube-controller-manager": binaries.kubeControllerManager,
  }[component];
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] === binary;
  } catch {
    return false;
  }
}

// The README's first command: `stratus up` brings up the control plane with the Stratus API, and
// `stratus down --purge` leaves no process or directory behind.
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isAlive } from "../../devcluster/controlplane.ts";
import { kubectl, run } from "./support.ts";

describe("stratus up and down", () => {
  let home: string;
  const stratus = (...args: string[]) =>
    run(process.execPath, ["cli/stratus.ts", ...args], { env: { ...process.env, STRATUS_HOME: home } });

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "stratus-home-"));
  });
  afterAll(async () => {
    await stratus("down", "--purge");
    await rm(home, { recursive: true, force: true });
  });

  it("starts a cloud whose API answers kubectl, and stops it without leftovers", async () => {
    const up = await stratus("up");
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain("installing the Stratus CRDs");
    const kubeconfig = /export KUBECONFIG=(\S+)/.exec(up.stdout)?.[1] as string;
    expect(existsSync(kubeconfig)).toBe(true);

    const applied = await kubectl(kubeconfig, ["apply", "--server-side", "-k", "examples/small-cloud"]);
    expect(applied.code, applied.stderr).toBe(0);
    const vms = await kubectl(kubeconfig, ["get", "vm", "-o", "name"]);
    expect(vms.stdout.trim()).toBe("virtualmachine.stratus.io/app-1");
    const status = await stratus("status");
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/kube-apiserver: running \(pid \d+\)/);
    expect(status.stdout).toContain("hosts (0):");
    expect(status.stdout).toMatch(/virtual machines \(1\):\n {2}default\/app-1 {2}Pending {2}host=- {2}ip=-/);

    const state = JSON.parse(readFileSync(join(home, "cluster", "state.json"), "utf8")) as {
      pids: Record<string, number>;
    };
    const pids = Object.values(state.pids);
    expect(pids).toHaveLength(3);
    const down = await stratus("down", "--purge");
    expect(down.code, down.stderr).toBe(0);
    expect(pids.filter(isAlive)).toEqual([]);
    expect(existsSync(join(home, "cluster"))).toBe(false);
  });
});

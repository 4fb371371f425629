// The README's first command, scripted: `stratus up` on a machine where nothing runs brings up the
// whole local cloud, the three commands it prints work exactly as printed (a VM reaches Running
// with an address and the `cs` client lists it), `stratus down` leaves no Stratus process, port or
// libvirt object behind, and the next `stratus up` brings the VM back from the API objects alone.
// As root with libvirt and QEMU installed (CI) the guest is real and must take its address by DHCP.
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openConsole } from "../../cli/console.ts";
import { isAlive } from "../../devcluster/controlplane.ts";
import { readSupervisorState, type SupervisorState } from "../../devcluster/supervisor.ts";
import { domainName } from "../../host-agent/domain-xml.ts";
import { poolName } from "../../host-agent/libvirt-hypervisor.ts";
import { networkPrefix } from "../../host-agent/network-xml.ts";
import { kubeConfigFrom } from "../../runtime/config.ts";
import { kubectl, readWebConsoleUntil, run, waitFor } from "./support.ts";

const execFileAsync = promisify(execFile);
const virsh = (...args: string[]) =>
  execFileAsync("virsh", ["-c", "qemu:///system", ...args]).then(
    (r) => r.stdout,
    () => undefined,
  );

interface Printed {
  exports: string;
  commands: string[];
}

/** The `export` lines and the commands under "Try:", as a user would copy them. */
function printedCommands(stdout: string): Printed {
  const lines = stdout.split("\n");
  const exports = lines.filter((l) => l.trim().startsWith("export ")).map((l) => l.trim());
  const start = lines.indexOf("Try:");
  const commands = [];
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith("  ")) break;
    commands.push(line.trim());
  }
  return { exports: exports.join("\n"), commands };
}

function portIsClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });
}

/** Processes whose command line mentions `needle` (zombies, which run nothing, excepted). */
function processesMentioning(needle: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      if (cmdline.includes(needle) && isAlive(Number(pid)) && Number(pid) !== process.pid)
        found.push(`${pid}: ${cmdline.slice(0, 200)}`);
    } catch {}
  }
  return found;
}

describe("stratus up, the printed commands, stratus down", () => {
  let home: string;
  const stratus = (...args: string[]) =>
    run(process.execPath, ["cli/stratus.ts", ...args], { env: { ...process.env, STRATUS_HOME: home } });
  const shell = (printed: Printed, command: string) =>
    run("bash", ["-c", `${printed.exports}\n${command}`], { env: { ...process.env, KUBECONFIG: "" } });
  const cloudState = () =>
    JSON.parse(readFileSync(join(home, "cloud", "state.json"), "utf8")) as {
      libvirtUri: string;
      apiEndpoint: string;
      healthPorts: Record<string, number>;
    };
  const supervisorState = () => readSupervisorState(join(home, "cloud", "supervisor")) as SupervisorState;
  const clusterSupervisorState = () =>
    readSupervisorState(join(home, "cluster", "supervisor")) as SupervisorState;
  const clusterState = () =>
    JSON.parse(readFileSync(join(home, "cluster", "state.json"), "utf8")) as {
      ports: Record<string, number>;
    };

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "stratus-home-"));
  });
  afterAll(async () => {
    await stratus("down", "--purge");
    await rm(home, { recursive: true, force: true });
  });

  it("brings up a cloud whose printed commands work, and stops it without leftovers", async () => {
    const up = await stratus("up");
    expect(up.code, up.stderr).toBe(0);
    for (const step of [
      "installing the Stratus CRDs",
      "starting operator",
      "starting apiserver",
      "starting host-agent",
    ])
      expect(up.stderr).toContain(step);
    const printed = printedCommands(up.stdout);
    expect(printed.exports).toMatch(/export KUBECONFIG=\S+/);
    expect(printed.exports).toMatch(
      /CLOUDSTACK_ENDPOINT=http:\/\/127\.0\.0\.1:\d+\/client\/api CLOUDSTACK_KEY=\S+ CLOUDSTACK_SECRET=\S+/,
    );
    expect(printed.commands).toHaveLength(3);
    const [create, wait, list] = printed.commands as [string, string, string];

    const created = await shell(printed, create);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toContain("virtualmachine.stratus.io/first-vm created");
    const running = await shell(printed, wait);
    expect(running.code, running.stderr).toBe(0);
    const address = /first-vm\s+Running\s+\S+\s+(10\.\d+\.0\.\d+)/.exec(running.stdout)?.[1];
    expect(address, running.stdout).toBeDefined();

    const listed = await shell(printed, list);
    expect(listed.code, listed.stderr).toBe(0);
    const vms = (
      JSON.parse(listed.stdout) as {
        virtualmachine: { name: string; state: string; nic: { ipaddress: string }[] }[];
      }
    ).virtualmachine;
    expect(vms.map((vm) => [vm.name, vm.state, vm.nic[0]?.ipaddress])).toEqual([
      ["first-vm", "Running", address],
    ]);

    const { libvirtUri, apiEndpoint, healthPorts } = cloudState();
    const kubeconfig = /export KUBECONFIG=(\S+)/.exec(printed.exports)?.[1] as string;
    // The host promises 4 times its cores (cpu.overprovisioning.factor), so a 2-core machine runs
    // three tiny VMs: two more through `cs`, with no networkids (the account's one network).
    const host = await kubectl(kubeconfig, [
      "get",
      "host",
      hostname(),
      "-o",
      "jsonpath={.spec.cpuOvercommitRatio}",
    ]);
    expect(host.stdout).toBe("4");
    const uidOf = async (kind: string, name: string) =>
      (await kubectl(kubeconfig, ["get", kind, name, "-o", "jsonpath={.metadata.uid}"])).stdout;
    const catalog = `serviceofferingid=${await uidOf("serviceoffering", "tiny")} templateid=${await uidOf("template", "tiny-linux")} zoneid=${await uidOf("zone", "local")}`;
    const csClient = list.replace(/ listVirtualMachines$/, ""); // as printed: `cs` or `python3 -m cs`
    const more: string[] = [];
    for (const name of ["second-vm", "third-vm"]) {
      const deployed = await shell(printed, `${csClient} deployVirtualMachine ${catalog} name=${name}`);
      expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0);
      const vm = JSON.parse(deployed.stdout).virtualmachine as { id: string };
      expect(vm).toMatchObject({ name, state: "Running" });
      more.push(vm.id);
    }
    for (const id of more)
      expect((await shell(printed, `${csClient} destroyVirtualMachine id=${id} expunge=true`)).code).toBe(0);
    // Gone (domains and disks removed) before the cloud is stopped, so the rest sees only first-vm.
    await waitFor(
      "the two extra VMs to be gone",
      async () =>
        (await kubectl(kubeconfig, ["get", "vm", "-o", "name"])).stdout.trim() ===
        "virtualmachine.stratus.io/first-vm",
      { timeoutMs: 120_000 },
    );
    const uid = (await kubectl(kubeconfig, ["get", "vm", "first-vm", "-o", "jsonpath={.metadata.uid}"]))
      .stdout;
    expect(uid).toMatch(/^[0-9a-f-]{36}$/);
    // The seeded template is a bootable disk, so first-vm has a ROOT volume of its 64 MiB image.
    const roots = await shell(printed, `${csClient} listVolumes type=ROOT virtualmachineid=${uid}`);
    expect(roots.code, roots.stderr).toBe(0);
    expect(JSON.parse(roots.stdout)).toMatchObject({
      count: 1,
      volume: [{ type: "ROOT", state: "Ready", virtualmachineid: uid, size: 64 * 2 ** 20 }],
    });
    if (libvirtUri === "qemu:///system") {
      // The guest itself asked for its address: dnsmasq leased exactly that one to it.
      await waitFor(
        "the guest's DHCP lease",
        async () => {
          const networks =
            (await virsh("net-list", "--name"))
              ?.split("\n")
              .filter((n) => n.startsWith("stratus-") && n.includes("-net-")) ?? [];
          for (const network of networks)
            if ((await virsh("net-dhcp-leases", network))?.includes(`${address}/24`)) return true;
          return false;
        },
        { timeoutMs: 120_000 },
      );
    }
    if (libvirtUri === "qemu:///system") {
      // `stratus console first-vm`, as printed: the kube-apiserver → API component → agent relay.
      const serial = await openConsole(kubeConfigFrom(kubeconfig), "default", "first-vm");
      expect(await readWebConsoleUntil(serial, `stratus-guest: ip: ${address}/24`)).toContain(address);
    }
    const status = await stratus("status");
    expect(status.stdout).toMatch(/host-agent: running \(pid \d+, up [^,]+, 0 restarts\)/);
    expect(status.stdout).toMatch(/supervisor: running \(pid \d+\)/);
    expect(status.stdout).toMatch(/hosts \(1\):\n {2}\S+ {2}zone=local {2}Ready/);

    // Two supervisors (the control plane's and the cloud's) and the three processes each runs.
    const pids = [supervisorState(), clusterSupervisorState()].flatMap((state) => [
      state.supervisorPid,
      ...Object.values(state.components).map((c) => c.pid as number),
    ]);
    expect(pids).toHaveLength(8);
    const ports = [
      Number(new URL(apiEndpoint).port),
      ...Object.values(healthPorts),
      clusterState().ports.apiserver as number,
      clusterState().ports.etcdClient as number,
    ];
    // What this cloud's agent marks as its own in libvirt (other clouds on the daemon are not its).
    const clusterId = (
      await kubectl(kubeconfig, ["get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}"])
    ).stdout;
    const owner = { cluster: clusterId, host: hostname() };
    const down = await stratus("down");
    expect(down.code, down.stderr).toBe(0);
    expect(pids.filter(isAlive)).toEqual([]);
    for (const port of ports) expect(await portIsClosed(port), `port ${port}`).toBe(true);
    expect(processesMentioning(home)).toEqual([]);
    expect(processesMentioning(uid)).toEqual([]); // no QEMU left
    if (libvirtUri === "qemu:///system" && (await virsh("version")) !== undefined) {
      // libvirtd ran before `stratus up`, so it still runs: it must hold nothing of this cloud's.
      const names = async (list: string) => ((await virsh(list, "--all", "--name")) ?? "").split("\n");
      expect(await names("list")).not.toContain(domainName(uid));
      expect((await names("net-list")).filter((n) => n.startsWith(networkPrefix(owner)))).toEqual([]);
      expect(await names("pool-list")).not.toContain(poolName(owner));
    }
    expect(processesMentioning(`dnsmasq/${networkPrefix(owner)}`)).toEqual([]); // no dnsmasq of its networks

    // Level-triggered: the next `stratus up` runs the VM again from the API objects and its disks.
    const again = await stratus("up");
    expect(again.code, again.stderr).toBe(0);
    const back = await shell(printedCommands(again.stdout), wait);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toMatch(
      new RegExp(`first-vm\\s+Running\\s+\\S+\\s+${address?.replaceAll(".", "\\.")}`),
    );

    const purged = await stratus("down", "--purge");
    expect(purged.code, purged.stderr).toBe(0);
    expect(existsSync(join(home, "cluster"))).toBe(false);
    expect(existsSync(join(home, "cloud"))).toBe(false);
    expect(processesMentioning(home)).toEqual([]);
  }, 900_000);

  it("SIGKILL the operator: it is back within seconds and `stratus status` shows a restart", async () => {
    const up = await stratus("up");
    expect(up.code, up.stderr).toBe(0);
    const killed = supervisorState().components.operator;
    expect(killed).toMatchObject({ state: "running", restarts: 0 });
    process.kill(killed?.pid as number, "SIGKILL");
    const back = await waitFor(
      "the operator to run again",
      () => {
        const operator = supervisorState().components.operator;
        return operator?.state === "running" && operator.pid !== killed?.pid ? operator : undefined;
      },
      { timeoutMs: 15_000 },
    );
    expect(back).toMatchObject({ restarts: 1, lastExit: { signal: "SIGKILL" } });
    const healthz = `http://127.0.0.1:${cloudState().healthPorts.operator}/healthz`;
    await waitFor(
      "the new operator's /healthz",
      async () => (await fetch(healthz).catch(() => undefined))?.ok,
    );
    const status = await stratus("status");
    expect(status.stdout).toMatch(
      new RegExp(`operator: running \\(pid ${back.pid}, up [^,]+, 1 restart, last exit: signal SIGKILL`),
    );
    expect(status.stdout).toMatch(/apiserver: running \(pid \d+, up [^,]+, 0 restarts\)/);
    const instancesOf = (script: string) => processesMentioning(home).filter((p) => p.includes(script));
    // Exactly one operator of this cloud: the supervisor started one, not a second.
    expect(instancesOf("operator/main.ts")).toHaveLength(1);

    // The supervisor SIGKILLed: the components keep running unsupervised, and the next `stratus up`
    // starts afresh without a second copy of anything.
    process.kill(supervisorState().supervisorPid, "SIGKILL");
    await waitFor("`stratus status` to see the supervisor gone", async () =>
      (await stratus("status")).stdout.includes("supervisor: not running"),
    );
    const again = await stratus("up");
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain("stopping the components a stopped or killed supervisor left running");
    for (const script of ["operator/main.ts", "apiserver/main.ts", "host-agent/main.ts", "cloud/supervisor"])
      expect(instancesOf(script), script).toHaveLength(1);
    const down = await stratus("down");
    expect(down.code, down.stderr).toBe(0);
    expect(processesMentioning(home)).toEqual([]);
  }, 600_000);
});

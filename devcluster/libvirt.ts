// The local libvirt daemons for `stratus up` and the real-QEMU tests: started when they are not
// running (as root, without systemd), and /dev/kvm given the group access udev gives it on Debian;
// `stratus up` uses real QEMU through them when it can, libvirt's test driver otherwise.
import { execFile } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { chmod, chown, readFile, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { isAlive } from "../runtime/process-alive.ts";
import { pollUntil } from "../runtime/time.ts";
import type { Progress } from "./binaries.ts";
import { ControlPlaneSetupError } from "./binaries.ts";
import { terminate } from "./controlplane.ts";

const run = promisify(execFile);
const SOCKET = "/run/libvirt/libvirt-sock";

export const canRunQemu = (): boolean =>
  process.getuid?.() === 0 && existsSync("/usr/sbin/libvirtd") && existsSync("/usr/bin/qemu-system-x86_64");

export async function libvirtAnswers(): Promise<boolean> {
  if (!existsSync(SOCKET)) return false;
  return run("virsh", ["-c", "qemu:///system", "version"]).then(
    () => true,
    () => false,
  );
}

/**
 * Starts virtlockd, virtlogd and libvirtd unless libvirtd answers; true when this call started
 * libvirtd. libvirtd reads its lock manager only when it starts: one that answers from before disk
 * leases were enabled is restarted (its guests keep running; nothing else must use it meanwhile,
 * which is why `stratus test` calls this before any test starts).
 */
export async function ensureLibvirtDaemons(progress: Progress = () => {}): Promise<boolean> {
  await grantKvmGroupAccess(progress);
  const leasesEnabledNow = await enableDiskLeases(QEMU_CONF, progress);
  await ensureLockDaemon(progress);
  const answering = await libvirtAnswers();
  if (answering) {
    if (!leasesEnabledNow) return false;
    progress("restarting libvirtd to take disk leases");
    await stopDaemon("libvirtd");
  } else progress("starting virtlogd and libvirtd");
  await run("virtlogd", ["-d"]).catch(() => undefined);
  await run("libvirtd", ["-d"]);
  await pollUntil("libvirtd to answer", libvirtAnswers, {
    timeoutMs: 30_000,
    timeoutError: (message) => new ControlPlaneSetupError(message),
  });
  // A daemon restarted here was someone else's to stop.
  return !answering;
}

export async function stopLibvirtDaemons(): Promise<void> {
  // virtlockd last: it holds the leases of guests that may still be running.
  for (const name of ["libvirtd", "virtlogd", "virtlockd"]) await stopDaemon(name);
}

async function stopDaemon(name: string): Promise<void> {
  const pid = Number(await readFile(`/run/${name}.pid`, "utf8").catch(() => ""));
  if (pid > 0) await terminate(pid, undefined, 15_000);
}

const QEMU_CONF = "/etc/libvirt/qemu.conf";
const LOCKD_SOCKET = "/run/libvirt/virtlockd-sock";
const LEASES_LINE = 'lock_manager = "lockd"';

/**
 * HA's storage fence: libvirt takes a lease (held by virtlockd, an fcntl lock on the disk file) on
 * every disk before QEMU starts, so no second guest on this host, or on another host of the same
 * shared pool, opens a disk a guest holds. Returns true when it changed the file. A file that names
 * another lock manager (sanlock) is left as its administrator set it.
 */
export async function enableDiskLeases(conf: string, progress: Progress = () => {}): Promise<boolean> {
  const text = await readFile(conf, "utf8");
  const chosen = /^\s*lock_manager\s*=\s*"([^"]*)"/m.exec(text)?.[1];
  if (chosen === "lockd") return false;
  if (chosen !== undefined) {
    progress(`${conf} names the lock manager "${chosen}": left as it is (Stratus sets up "lockd")`);
    return false;
  }
  progress(`enabling disk leases (virtlockd) in ${conf}`);
  await writeFile(
    conf,
    `${text.trimEnd()}\n\n# Stratus: disk leases held by virtlockd (HA's storage fence).\n${LEASES_LINE}\n`,
  );
  return true;
}

async function ensureLockDaemon(progress: Progress): Promise<void> {
  const pid = Number(await readFile("/run/virtlockd.pid", "utf8").catch(() => ""));
  if (pid > 0 && isAlive(pid) && existsSync(LOCKD_SOCKET)) return;
  progress("starting virtlockd");
  await run("virtlockd", ["-d"]);
  await pollUntil("virtlockd's socket", async () => existsSync(LOCKD_SOCKET), {
    timeoutMs: 15_000,
    timeoutError: (message) => new ControlPlaneSetupError(message),
  });
}

/**
 * Without udev, /dev/kvm stays root-only (0600). QEMU's capability probe then sees KVM while
 * libvirt's cache check, made as the QEMU user (libvirt-qemu, group kvm), does not; the cache is
 * never valid and every domain definition re-probes QEMU (about 40 s here). Debian's udev rule
 * makes it root:kvm 0660; so does this.
 */
async function grantKvmGroupAccess(progress: Progress): Promise<void> {
  if (!existsSync("/dev/kvm")) return;
  const device = statSync("/dev/kvm");
  if ((device.mode & 0o060) === 0o060) return;
  const kvmGroup = await run("getent", ["group", "kvm"]).then(
    (r) => Number(r.stdout.split(":")[2]),
    () => undefined,
  );
  if (kvmGroup === undefined) return;
  progress("giving group kvm access to /dev/kvm (as Debian's udev rule does)");
  await chown("/dev/kvm", device.uid, kvmGroup);
  await chmod("/dev/kvm", 0o660);
}

/** Real QEMU through qemu:///system when this is root on a machine with libvirt and QEMU. */
export async function chooseHypervisor(
  progress: Progress,
): Promise<{ uri: string; startedDaemons: boolean }> {
  if (!canRunQemu()) {
    progress(
      `${process.getuid?.() === 0 ? "libvirt or QEMU is not installed" : "not root"}: using libvirt's test driver ` +
        "(test:///default); VMs are simulated, nothing boots",
    );
    return { uri: "test:///default", startedDaemons: false };
  }
  const startedDaemons = await ensureLibvirtDaemons(progress);
  progress("using real QEMU through qemu:///system (software emulation)");
  return { uri: "qemu:///system", startedDaemons };
}

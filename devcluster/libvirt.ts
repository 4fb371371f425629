// The local libvirt daemons for `stratus up` and the real-QEMU tests: started when they are not
// running (as root, without systemd), and /dev/kvm given the group access udev gives it on Debian.
import { execFile } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { chmod, chown, readFile } from "node:fs/promises";
import { promisify } from "node:util";
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

/** Starts virtlogd and libvirtd unless libvirtd answers; true when this call started them. */
export async function ensureLibvirtDaemons(progress: Progress = () => {}): Promise<boolean> {
  await grantKvmGroupAccess(progress);
  if (await libvirtAnswers()) return false;
  progress("starting virtlogd and libvirtd");
  await run("virtlogd", ["-d"]).catch(() => undefined);
  await run("libvirtd", ["-d"]);
  await pollUntil("libvirtd to answer", libvirtAnswers, {
    timeoutMs: 30_000,
    timeoutError: (message) => new ControlPlaneSetupError(message),
  });
  return true;
}

export async function stopLibvirtDaemons(): Promise<void> {
  for (const name of ["libvirtd", "virtlogd"]) {
    const pid = Number(await readFile(`/run/${name}.pid`, "utf8").catch(() => ""));
    if (pid > 0) await terminate(pid, undefined, 15_000);
  }
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

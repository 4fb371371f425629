// The guest images Stratus boots, built by the scripts in test/images (or reused from their
// cache): the tiny guest (direct-boot kernel and initrd, and the same as a bootable disk, which
// `stratus up` seeds), and the Debian cloud image tests log into.
import { execFile } from "node:child_process";
import { chmod, copyFile, mkdir, rename, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { ControlPlaneSetupError } from "./binaries.ts";
import { PROJECT_ROOT } from "./cloud-processes.ts";

const run = promisify(execFile);

/** Runs an image script of test/images; the last line it prints (a path). */
async function built(script: string, what: string, maxBuffer = 1 << 20): Promise<string> {
  try {
    const { stdout } = await run("bash", [join(PROJECT_ROOT, "test/images", script)], { maxBuffer });
    return stdout.trim().split("\n").pop() as string;
  } catch (error) {
    const reason = ((error as { stderr?: string }).stderr || (error as Error).message).trim().slice(-2000);
    throw new ControlPlaneSetupError(`cannot build ${what}: ${reason}`);
  }
}

export async function buildTinyGuest(): Promise<{ kernel: string; initrd: string }> {
  const directory = await built("build-tiny-guest.sh", "the tiny guest");
  return { kernel: join(directory, "vmlinuz"), initrd: join(directory, "initrd.gz") };
}

/**
 * The tiny guest as a bootable qcow2 (build-tiny-disk.sh): the template `stratus up` seeds, so
 * its VMs have a ROOT volume. Returns the qcow2's path.
 */
export function buildTinyDisk(): Promise<string> {
  return built("build-tiny-disk.sh", "the tiny guest's disk");
}

/**
 * `image` copied into `directory` under its own (content-keyed) name, where QEMU may read it (a
 * build cache in root's home is not), once: a template's hostPath image is its disks' backing
 * file, so a file a template names is never rewritten. Returns the copy's path.
 */
export async function installedImage(image: string, directory: string): Promise<string> {
  const target = join(directory, basename(image));
  if (
    await stat(target).then(
      (s) => s.size > 0,
      () => false,
    )
  )
    return target;
  await mkdir(directory, { recursive: true, mode: 0o755 });
  await copyFile(image, `${target}.partial`);
  await chmod(`${target}.partial`, 0o644);
  await rename(`${target}.partial`, target);
  return target;
}

/**
 * The real cloud image: Debian with cloud-init reading the config drive, OpenSSH and a boot
 * loader (build-cloud-image.sh; root, a few minutes the first time). Returns the qcow2's path.
 */
export function buildCloudImage(): Promise<string> {
  return built("build-cloud-image.sh", "the cloud image", 16 << 20);
}

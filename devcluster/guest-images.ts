// The guest images Stratus boots, built by the scripts in test/images (or reused from their
// cache): the tiny direct-boot guest `stratus up` seeds, and the Debian cloud image tests log into.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { ControlPlaneSetupError } from "./binaries.ts";
import { PROJECT_ROOT } from "./cloud-processes.ts";

const run = promisify(execFile);

export async function buildTinyGuest(): Promise<{ kernel: string; initrd: string }> {
  try {
    const { stdout } = await run("bash", [join(PROJECT_ROOT, "test/images/build-tiny-guest.sh")], {
      maxBuffer: 1 << 20,
    });
    const directory = stdout.trim();
    return { kernel: join(directory, "vmlinuz"), initrd: join(directory, "initrd.gz") };
  } catch (error) {
    throw new ControlPlaneSetupError(
      `cannot build the tiny guest: ${((error as { stderr?: string }).stderr || (error as Error).message).trim()}`,
    );
  }
}

/**
 * Builds (or reuses) the real cloud image: Debian with cloud-init reading the config drive,
 * OpenSSH and a boot loader (test/images/build-cloud-image.sh; root, a few minutes the first time).
 * Returns the qcow2's path.
 */
export async function buildCloudImage(): Promise<string> {
  try {
    const { stdout } = await run("bash", [join(PROJECT_ROOT, "test/images/build-cloud-image.sh")], {
      maxBuffer: 16 << 20,
    });
    return stdout.trim().split("\n").pop() as string;
  } catch (error) {
    throw new ControlPlaneSetupError(
      `cannot build the cloud image: ${((error as { stderr?: string }).stderr || (error as Error).message).trim().slice(-2000)}`,
    );
  }
}

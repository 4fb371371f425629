// Disk files moving between pools through secondary storage: the holding host flattens the disk
// into one self-contained qcow2 (a template overlay's backing file does not exist on the other
// host) and hashes it; the receiving host copies it in, hashing as it copies, and keeps the copy
// only when the hashes agree and the image names no backing file. Every write goes to a
// temporary name first and is renamed, so a crash never leaves a half-written file under the real name.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import type { StagedDisk } from "./hypervisor.ts";
import { checkImage, writeVerified } from "./images.ts";
import { HostProblem } from "./problem.ts";

const run = promisify(execFile);

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/**
 * Writes `source` as one qcow2 with no backing file to `target`. qemu-img takes the image's lock,
 * so a disk a running QEMU still holds is refused rather than copied torn (unless the caller paused
 * that QEMU and says so).
 */
export async function flattenTo(
  source: string,
  target: string,
  options: { forceShare?: boolean } = {},
): Promise<StagedDisk> {
  await mkdir(dirname(target), { recursive: true, mode: 0o700 });
  const part = `${target}.part`;
  await rm(part, { force: true });
  try {
    // -U (force share) only for a guest the caller paused: QEMU flushed the disk and writes nothing.
    const share = options.forceShare ? ["-U"] : [];
    await run("qemu-img", ["convert", ...share, "-O", "qcow2", source, part], { timeout: 3_600_000 });
  } catch (error) {
    await rm(part, { force: true });
    const detail = ((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
    throw new HostProblem("ExportFailed", `copying ${source} out failed: ${detail}`);
  }
  await chmod(part, 0o600);
  const sha256 = await sha256File(part);
  const { size } = await stat(part);
  await rename(part, target);
  return { path: target, sha256, bytes: size };
}

/** Copies a staged disk to `target`, keeping it only when it hashes to `staged.sha256` and is self-contained. */
export async function copyVerified(staged: StagedDisk, target: string): Promise<void> {
  await copyChecked(staged, target, (part) => checkImage(part, "qcow2"));
}

/**
 * Copies `staged` to `target` with a running sha256, keeping it (renamed from a temporary name)
 * only when it hashes to `staged.sha256` and passes `check`.
 */
export async function copyChecked(
  staged: StagedDisk,
  target: string,
  check: (part: string) => Promise<unknown> = async () => undefined,
): Promise<StagedDisk> {
  await mkdir(dirname(target), { recursive: true, mode: 0o700 });
  try {
    return await writeVerified(createReadStream(staged.path), target, {
      expect: {
        sha256: staged.sha256,
        mismatch: (actual) =>
          new HostProblem(
            "ChecksumMismatch",
            `the copy of ${staged.path} hashes to ${actual}, not ${staged.sha256}; it was discarded`,
          ),
      },
      // A staged file is outside any pool: make sure it cannot make QEMU open someone else's file.
      check,
      mode: 0o600,
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT")
      throw new HostProblem("StagedCopyMissing", `the staged copy ${staged.path} is gone`);
    throw error;
  }
}

/**
 * libvirt's test driver (a simulated host) has volumes but no files: a move between simulated
 * hosts stages a small descriptor of the disk instead of its bytes, through the same secondary
 * storage, checksum and hand-over as a real move.
 */
export async function stageDescriptor(target: string, capacityBytes: bigint): Promise<StagedDisk> {
  await mkdir(dirname(target), { recursive: true, mode: 0o700 });
  const part = `${target}.part`;
  await writeFile(part, JSON.stringify({ simulated: true, capacityBytes: String(capacityBytes) }), {
    mode: 0o600,
  });
  const sha256 = await sha256File(part);
  const { size } = await stat(part);
  await rename(part, target);
  return { path: target, sha256, bytes: size };
}

/** The capacity a staged descriptor names, once its checksum is right. */
export async function readDescriptor(staged: StagedDisk): Promise<bigint> {
  const text = await readFile(staged.path, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT")
      throw new HostProblem("StagedCopyMissing", `the staged copy ${staged.path} is gone`);
    throw error;
  });
  const actual = createHash("sha256").update(text).digest("hex");
  if (actual !== staged.sha256)
    throw new HostProblem(
      "ChecksumMismatch",
      `the copy of ${staged.path} hashes to ${actual}, not ${staged.sha256}`,
    );
  const parsed = JSON.parse(text) as { simulated?: boolean; capacityBytes?: string };
  if (!parsed.simulated || !/^[0-9]{1,20}$/.test(parsed.capacityBytes ?? ""))
    throw new HostProblem("UnsafeImage", `${staged.path} is no simulated disk`);
  return BigInt(parsed.capacityBytes as string);
}

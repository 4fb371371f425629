// Real qemu-img on real files (Debian's qemu-utils, which `stratus test` installs): a flattened
// copy carries the bytes of a template overlay and no backing file; a copy is kept only when it
// hashes right and names no other file.
import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyVerified, flattenTo, sha256File } from "./disk-files.ts";
import { inspectImage } from "./images.ts";
import { HostProblem } from "./problem.ts";

const run = promisify(execFile);
let dir: string;

/** Files left beside `path` by an unfinished write (`path.part`, `path.partial-…`). */
const unfinished = (path: string) =>
  readdirSync(dirname(path)).filter((name) => name.startsWith(`${basename(path)}.`));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "stratus-disk-files-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A template image holding `pattern` at offset 0, and a qcow2 overlay of it (as a root disk is). */
async function overlayWithPattern(pattern: string): Promise<string> {
  const raw = join(dir, "template.raw");
  await writeFile(raw, Buffer.concat([Buffer.from(pattern), Buffer.alloc(1024 * 1024 - pattern.length)]));
  const base = join(dir, "template.qcow2");
  await run("qemu-img", ["convert", "-O", "qcow2", raw, base]);
  const overlay = join(dir, "root-disk");
  await run("qemu-img", ["create", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay]);
  return overlay;
}

describe("disk files moving through secondary storage", () => {
  it("flattens a template overlay into one self-contained image with the same bytes, and a checksum that is the file's", async () => {
    const overlay = await overlayWithPattern("stratus-pattern-42");
    const staged = await flattenTo(overlay, join(dir, "secondary", "transfers", "v1.qcow2"));
    expect((await inspectImage(staged.path)).backingFile).toBeUndefined();
    expect(staged.sha256).toBe(await sha256File(staged.path));
    expect(unfinished(staged.path)).toEqual([]);
    // qemu-img compare exits 0 only when the guest-visible contents are identical.
    await expect(run("qemu-img", ["compare", overlay, staged.path])).resolves.toBeDefined();

    const target = join(dir, "pool-h2", "root-disk");
    await run("mkdir", ["-p", join(dir, "pool-h2")]);
    await copyVerified(staged, target);
    await expect(run("qemu-img", ["compare", overlay, target])).resolves.toBeDefined();
  });

  it("discards a copy that does not hash to the staged checksum, leaving nothing under either name", async () => {
    const overlay = await overlayWithPattern("x");
    const staged = await flattenTo(overlay, join(dir, "secondary", "transfers", "v2.qcow2"));
    const target = join(dir, "pool-h2", "v2");
    const wrong = { ...staged, sha256: "0".repeat(64) };
    const error = await copyVerified(wrong, target).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HostProblem);
    expect((error as HostProblem).reason).toBe("ChecksumMismatch");
    expect(existsSync(target)).toBe(false);
    expect(unfinished(target)).toEqual([]);
  });

  it("refuses a staged image that names a backing file, even with the right checksum (it could read another disk)", async () => {
    const sneaky = join(dir, "secondary", "transfers", "v3.qcow2");
    await run("qemu-img", ["create", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", sneaky]);
    const staged = { path: sneaky, sha256: await sha256File(sneaky), bytes: 0 };
    const target = join(dir, "pool-h2", "v3");
    const error = await copyVerified(staged, target).catch((e: unknown) => e);
    expect((error as HostProblem).reason).toBe("UnsafeImage");
    expect(existsSync(target)).toBe(false);
  });

  it("says so when the staged copy is gone", async () => {
    const error = await copyVerified(
      { path: join(dir, "nowhere.qcow2"), sha256: "0".repeat(64), bytes: 0 },
      join(dir, "pool-h2", "v4"),
    ).catch((e: unknown) => e);
    expect((error as HostProblem).reason).toBe("StagedCopyMissing");
  });
});

// The Debian packages Stratus needs, in two lists read the same way: what the local cloud runs on
// (devcluster/debian-packages), installed by `stratus up`, and what only the tests need besides
// (.ci/debian-packages), installed with the first by `stratus test` (and so by .ci/run). Each
// installs the missing ones when it runs as root on Debian, and otherwise says which are missing.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ControlPlaneSetupError, type Progress } from "./binaries.ts";

const run = promisify(execFile);

export const PACKAGE_LISTS = {
  /** What the local cloud runs on. */
  cloud: fileURLToPath(new URL("debian-packages", import.meta.url)),
  /** What only the tests need besides (a real CloudStack client, Lua for the Argo CD health checks). */
  tests: fileURLToPath(new URL("../.ci/debian-packages", import.meta.url)),
};

/** The package names of a list file: one per line, `#` comments and blank lines aside. */
export function packageNames(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.replace(/#.*/, "").trim())
    .filter(Boolean);
}

/** The names of several list files, each once, in order. */
export async function readPackageLists(paths: readonly string[]): Promise<string[]> {
  const texts = await Promise.all(paths.map((path) => readFile(path, "utf8")));
  return [...new Set(texts.flatMap(packageNames))];
}

async function isInstalled(name: string): Promise<boolean> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  return run("dpkg-query", ["-W", "-f=${db:Status-Status}", name]).then(
    (r) => r.stdout.trim() === "installed",
    () => false,
  );
}

/**
 * Installs the missing packages of `lists` (default: the local cloud's) with apt-get when root on
 * Debian, saying what it installs and `why`; elsewhere it says what is missing.
 */
export async function ensureDebianPackages(
  progress: Progress,
  lists: readonly string[] = [PACKAGE_LISTS.cloud],
  why = "the local cloud needs",
): Promise<void> {
  const hasDpkg = await run("dpkg-query", ["--version"]).then(
    () => true,
    () => false,
  );
  const wanted = await readPackageLists(lists);
  if (!hasDpkg) {
    progress(`not a Debian system: install the equivalents of ${wanted.join(", ")} yourself (${why})`);
    return;
  }
  const missing: string[] = [];
  for (const name of wanted) if (!(await isInstalled(name))) missing.push(name);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    progress(`missing Debian packages ${why}: ${missing.join(", ")} (run as root and Stratus installs them)`);
    return;
  }
  progress(`installing Debian packages ${why}: ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  try {
    await run("apt-get", ["update", "-qq"], { env, maxBuffer: 16 << 20 });
    await run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], {
      env,
      maxBuffer: 64 << 20,
    });
  } catch (error) {
    const stderr = ((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
    throw new ControlPlaneSetupError(
      `apt-get could not install ${missing.join(" ")}: ${stderr.split("\n").slice(-5).join("\n")}`,
    );
  }
}

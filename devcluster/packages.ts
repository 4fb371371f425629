// The Debian packages the local cloud needs (devcluster/debian-packages): `stratus up` installs
// the missing ones when it runs as root on Debian, and otherwise says which are missing.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ControlPlaneSetupError, type Progress } from "./binaries.ts";

const run = promisify(execFile);
const LIST = fileURLToPath(new URL("debian-packages", import.meta.url));

/** The package names of a list file: one per line, `#` comments and blank lines aside. */
export function packageNames(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.replace(/#.*/, "").trim())
    .filter(Boolean);
}

async function isInstalled(name: string): Promise<boolean> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  return run("dpkg-query", ["-W", "-f=${db:Status-Status}", name]).then(
    (r) => r.stdout.trim() === "installed",
    () => false,
  );
}

export async function ensureDebianPackages(progress: Progress): Promise<void> {
  const hasDpkg = await run("dpkg-query", ["--version"]).then(
    () => true,
    () => false,
  );
  const wanted = packageNames(await readFile(LIST, "utf8"));
  if (!hasDpkg) {
    progress(`not a Debian system: install the equivalents of ${wanted.join(", ")} yourself`);
    return;
  }
  const missing: string[] = [];
  for (const name of wanted) if (!(await isInstalled(name))) missing.push(name);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    progress(`missing Debian packages ${missing.join(", ")} (run as root and \`stratus up\` installs them)`);
    return;
  }
  progress(`installing Debian packages: ${missing.join(" ")}`);
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

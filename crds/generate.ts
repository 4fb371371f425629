// `npm run generate`: writes crds/generated/ from the TypeBox kinds. `--check` only compares and
// fails when the committed files differ from what the kinds generate.
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KINDS } from "./index.ts";
import { renderGeneratedFiles } from "./render.ts";

export const GENERATED_DIR = fileURLToPath(new URL("./generated/", import.meta.url));

/** Names of the files in crds/generated that differ from, are missing from, or are extra to the generator's output. */
export async function driftedFiles(dir = GENERATED_DIR): Promise<string[]> {
  const expected = renderGeneratedFiles(KINDS);
  const present = await readdir(dir).catch(() => [] as string[]);
  const drifted: string[] = present.filter((file) => file.endsWith(".yaml") && !expected.has(file));
  for (const [file, content] of expected) {
    const actual = await readFile(join(dir, file), "utf8").catch(() => undefined);
    if (actual !== content) drifted.push(file);
  }
  return drifted.sort();
}

async function main(): Promise<void> {
  if (process.argv.includes("--check")) {
    const drifted = await driftedFiles();
    if (drifted.length > 0) {
      process.stderr.write(
        `crds/generated is out of date (${drifted.join(", ")}); run \`npm run generate\`.\n`,
      );
      process.exit(1);
    }
    return;
  }
  await rm(GENERATED_DIR, { recursive: true, force: true });
  await mkdir(GENERATED_DIR, { recursive: true });
  const files = renderGeneratedFiles(KINDS);
  for (const [file, content] of files) await writeFile(join(GENERATED_DIR, file), content);
  process.stdout.write(`wrote ${files.size} files to crds/generated/\n`);
}

if (import.meta.main) await main();

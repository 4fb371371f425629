// The host's template image cache: a file per template, named by the template's UID. A template
// leaves the API only once nothing uses it (the template-images finalizer, which storage releases
// when no VM or volume names it), so its cached files can go once it is gone. Unfinished downloads
// are removed when the agent starts, before anything downloads again.
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { PARTIAL_MARK } from "./images.ts";

const TEMPLATE_FILE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\./;

/** Pure: which files of the cache to remove. Files not named after a template are never touched. */
export function staleCacheFiles(
  files: readonly string[],
  liveTemplates: ReadonlySet<string>,
  startingUp: boolean,
): string[] {
  return files.filter((file) => {
    const uid = TEMPLATE_FILE.exec(file)?.[1];
    if (!uid) return false;
    return !liveTemplates.has(uid) || (startingUp && file.includes(PARTIAL_MARK));
  });
}

/** Removes the cache's stale files; returns their names. */
export async function pruneImageCache(
  dir: string,
  liveTemplates: ReadonlySet<string>,
  startingUp: boolean,
): Promise<string[]> {
  const files = await readdir(dir).catch(() => [] as string[]);
  const stale = staleCacheFiles(files, liveTemplates, startingUp);
  for (const file of stale) await rm(join(dir, file), { force: true });
  return stale;
}

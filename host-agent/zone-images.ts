// A URL template's image on the zone's secondary storage, made once per zone by the agent of the
// host the storage controller chose (status.zones[].host), as CloudStack's storage VM downloads
// a registered template once per zone. The download goes to a temporary name, is checked (size
// limit, the template's checksum, no backing file, the format) and only then renamed, so no half
// file ever looks complete; progress is reported every few seconds. Once storage says nothing
// uses a deleted template (`remove`), the same agent removes every file of it there.
import { readdir, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Logger } from "pino";
import type { Template } from "../crds/index.ts";
import {
  downloadsPerZone,
  secondaryImagePath,
  templateFileFormat,
  templateFilePrefix,
  zoneImage,
} from "../crds/template-images.ts";
import type { AgentWrites } from "./agent-writes.ts";
import { sha256File } from "./disk-files.ts";
import { checkImage, fetchImage, PARTIAL_MARK } from "./images.ts";
import { HostProblem } from "./problem.ts";

/** Failures that a retry cannot fix: the template must be registered again. */
const FINAL_REASONS: ReadonlySet<string> = new Set([
  "ChecksumMismatch",
  "ImageTooLarge",
  "UnsafeImage",
  "WrongImageFormat",
]);
/** A download that failed otherwise (server down, network) is tried again after this long. */
export const RETRY_AFTER_MS = 60_000;
/** Progress is written at most this often. */
export const PROGRESS_EVERY_MS = 5_000;

export type ZoneImageWork =
  /** Not this host's (or nothing to do): a download of it running here stops. */
  | "none"
  | "download"
  /** Ready: the file must still be there, else it is downloaded again. */
  | "keep"
  /** Failed for a reason a retry may fix. */
  | "retry"
  | "remove";

/** Pure: what this host does for the template's image in its zone. */
export function zoneImageWork(template: Template, zone: string, host: string): ZoneImageWork {
  const entry = zoneImage(template, zone);
  if (!entry || entry.host !== host) return "none";
  if (entry.remove) return entry.state === "Removed" ? "none" : "remove";
  if (!downloadsPerZone(template)) return "none";
  switch (entry.state) {
    case "Ready":
      return "keep";
    case "Error":
      return FINAL_REASONS.has(entry.reason ?? "") ? "none" : "retry";
    case "Removed":
      return "none";
    default:
      return "download";
  }
}

export interface ZoneImagesOptions {
  host: string;
  zone: string;
  secondaryPath(): string | undefined;
  writes: Pick<AgentWrites, "zoneImage">;
  log: Logger;
  maxBytes?: number;
  now?: () => number;
}

type Running = { abort: AbortController; done: Promise<void> };

export class ZoneImages {
  private readonly o: ZoneImagesOptions;
  /** Downloads under way, by template name. */
  private readonly running = new Map<string, Running>();
  private readonly failedAt = new Map<string, number>();
  private readonly now: () => number;

  constructor(options: ZoneImagesOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
  }

  /** Converges the template's image in this zone; `name` also when the template is gone. */
  async sync(name: string, template: Template | undefined): Promise<{ requeueAfterMs: number } | undefined> {
    const work = template ? zoneImageWork(template, this.o.zone, this.o.host) : "none";
    if (work !== "download" && work !== "retry" && work !== "keep") await this.stop(name);
    if (!template || work === "none") return undefined;
    const secondary = this.o.secondaryPath();
    if (!secondary) return { requeueAfterMs: 5_000 }; // the zone's cache has not caught up yet
    if (work === "remove") {
      await this.remove(name, template, secondary);
      return undefined;
    }
    if (this.running.has(name)) return undefined;
    if (work === "keep" && (await exists(secondaryImagePath(secondary, template)))) return undefined;
    const wait = (this.failedAt.get(name) ?? Number.NEGATIVE_INFINITY) + RETRY_AFTER_MS - this.now();
    if (work === "retry" && wait > 0) return { requeueAfterMs: wait };
    const abort = new AbortController();
    const done = this.download(name, template, secondary, abort.signal).finally(() => {
      if (this.running.get(name)?.abort === abort) this.running.delete(name);
    });
    this.running.set(name, { abort, done });
    return undefined;
  }

  /** Stops every download (the agent is shutting down). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.running.keys()].map((name) => this.stop(name)));
  }

  private async stop(name: string): Promise<void> {
    const running = this.running.get(name);
    if (!running) return;
    running.abort.abort();
    await running.done;
    this.o.log.info({ template: name }, "stopped the template's download");
  }

  private async download(name: string, template: Template, secondary: string, signal: AbortSignal) {
    const { zone, host } = this.o;
    const url = template.spec.source.url as string;
    const target = secondaryImagePath(secondary, template);
    // Writes in order: a late progress report never follows the final word.
    let writing: Promise<void> = Promise.resolve();
    const report = (fields: Record<string, unknown>) => {
      writing = writing
        .then(() => this.o.writes.zoneImage(name, zone, fields))
        .catch((error: unknown) =>
          this.o.log.warn({ template: name, err: String(error) }, "zone image report failed"),
        );
      return writing;
    };
    try {
      const found = await this.verifiedAlready(template, target);
      if (found) {
        await report({ state: "Ready", ...found });
        return;
      }
      await this.removeLeftovers(target);
      await report({ state: "Downloading", bytes: 0 });
      let reportedAt = this.now();
      const image = await fetchImage(url, target, {
        ...(template.spec.checksum ? { checksum: template.spec.checksum } : {}),
        check: (partial) => checkImage(partial, templateFileFormat(template)),
        ...(this.o.maxBytes ? { maxBytes: this.o.maxBytes } : {}),
        signal,
        tag: host,
        onProgress: (bytes, totalBytes) => {
          if (this.now() - reportedAt < PROGRESS_EVERY_MS) return;
          reportedAt = this.now();
          void report({ state: "Downloading", bytes, ...(totalBytes !== undefined ? { totalBytes } : {}) });
        },
      });
      this.failedAt.delete(name);
      await report({ state: "Ready", bytes: image.bytes, sha256: image.sha256 });
      this.o.log.info(
        { template: name, path: target, bytes: image.bytes },
        "template downloaded to the zone",
      );
    } catch (error) {
      if (signal.aborted) return; // removed or given to another host: nothing to say
      const problem =
        error instanceof HostProblem
          ? error
          : new HostProblem("DownloadFailed", `cannot download ${url}: ${(error as Error).message}`);
      this.failedAt.set(name, this.now());
      this.o.log.warn({ template: name, reason: problem.reason }, problem.message);
      await report({ state: "Error", reason: problem.reason, message: `${problem.message} (host ${host})` });
    }
  }

  /**
   * A file under the final name got it only after it was verified (an earlier run died before
   * saying so): hashed again, it is Ready; one that does not match the template's sum is replaced.
   */
  private async verifiedAlready(template: Template, target: string) {
    if (!(await exists(target))) return undefined;
    const sha256 = await sha256File(target);
    if (template.spec.checksum && template.spec.checksum !== `sha256:${sha256}`) {
      await rm(target, { force: true });
      return undefined;
    }
    return { sha256, bytes: (await stat(target)).size };
  }

  /** What an earlier run of this agent left unfinished (only one download of a template runs here). */
  private async removeLeftovers(target: string) {
    const mine = `${basename(target)}${PARTIAL_MARK}${this.o.host}-`;
    for (const file of await readdir(dirname(target)).catch(() => [] as string[]))
      if (file.startsWith(mine) && /^[0-9a-f]{8}$/.test(file.slice(mine.length)))
        await rm(join(dirname(target), file), { force: true });
  }

  private async remove(name: string, template: Template, secondary: string) {
    const dir = join(secondary, "templates");
    const prefix = templateFilePrefix(template.metadata.uid as string);
    const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.startsWith(prefix));
    for (const file of files) await rm(join(dir, file), { force: true });
    await this.o.writes.zoneImage(name, this.o.zone, { state: "Removed" });
    this.o.log.info(
      { template: name, files },
      "removed the template's files from the zone's secondary storage",
    );
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

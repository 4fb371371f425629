// The zone's template download on real files, from a real local HTTP server that counts requests.
import { createHash } from "node:crypto";
import { readdirSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Template } from "../crds/index.ts";
import type { ZoneImage } from "../crds/template-images.ts";
import { qcow2Header } from "../test/fixtures/qcow2.ts";
import { MemoryWrites } from "./testing/memory-writes.ts";
import { RETRY_AFTER_MS, ZoneImages, zoneImageWork } from "./zone-images.ts";

const image = qcow2Header(1n << 30n);
const checksum = `sha256:${createHash("sha256").update(image).digest("hex")}`;
const UID = "5e1f0000-0000-4000-8000-000000000001";

function template(entry: Partial<ZoneImage> | undefined, spec: Partial<Template["spec"]> = {}): Template {
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Template",
    metadata: { name: "tiny", uid: UID },
    spec: { source: { url: "http://unused/" }, checksum, ...spec },
    ...(entry ? { status: { zones: [{ zone: "z1", host: "h1", ...entry }] } } : {}),
  };
}

describe("zoneImageWork", () => {
  it.each([
    ["no entry", undefined, "none"],
    ["another host's", { host: "h2" }, "none"],
    ["just bound", {}, "download"],
    ["downloading (an earlier run died)", { state: "Downloading" as const }, "download"],
    ["ready", { state: "Ready" as const }, "keep"],
    ["a server that failed", { state: "Error" as const, reason: "DownloadFailed" }, "retry"],
    ["a wrong checksum", { state: "Error" as const, reason: "ChecksumMismatch" }, "none"],
    ["to remove", { state: "Ready" as const, remove: true }, "remove"],
    ["removed", { state: "Removed" as const, remove: true }, "none"],
  ])("%s: %s", (_what, entry, work) => {
    expect(zoneImageWork(template(entry), "z1", "h1")).toBe(work);
  });

  it("downloads nothing for a template made from a volume (its agent wrote the image), but removes it", () => {
    const made = { source: { volume: { namespace: "a", name: "v" } } };
    expect(zoneImageWork(template({}, made), "z1", "h1")).toBe("none");
    expect(zoneImageWork(template({ remove: true }, made), "z1", "h1")).toBe("remove");
  });
});

describe("a zone's template download", () => {
  let dir: string;
  let secondary: string;
  let server: Server;
  let base: string;
  const requests: string[] = [];
  /** Responses held open by /slow, ended when a test is done. */
  const held: ServerResponse[] = [];
  let writes: MemoryWrites;
  let clock = 1_000_000;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stratus-zone-images-"));
    server = createServer((request, response) => {
      requests.push(request.url ?? "");
      if (request.url === "/tiny.qcow2") response.end(image);
      else if (request.url === "/slow") {
        response.writeHead(200, { "content-length": String(image.length) });
        response.write(image.subarray(0, 100));
        held.push(response);
      } else response.writeHead(503).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const response of held) response.destroy();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    secondary = await mkdtemp(join(dir, "secondary-"));
    requests.length = 0;
    writes = new MemoryWrites(new Map());
  });

  const images = (host = "h1") =>
    new ZoneImages({
      host,
      zone: "z1",
      secondaryPath: () => secondary,
      writes,
      log: pino({ level: "silent" }),
      now: () => clock,
    });
  const at = (url: string, entry: Partial<ZoneImage> = {}, spec: Partial<Template["spec"]> = {}) =>
    template(entry, { source: { url: `${base}${url}` }, ...spec });
  const files = () => readdirSync(join(secondary, "templates"));
  const reports = () => writes.zoneImages.map(([, fields]) => fields);
  async function settle(zone: ZoneImages, t: Template) {
    await zone.sync("tiny", t);
    await (zone as unknown as { running: Map<string, { done: Promise<void> }> }).running.get("tiny")?.done;
  }

  it("downloads the image once, verified, under the template's name, and says Ready with its sum", async () => {
    const zone = images();
    await settle(zone, at("/tiny.qcow2"));
    expect(requests).toEqual(["/tiny.qcow2"]);
    expect(files()).toEqual([`${UID}.qcow2`]);
    expect(new Uint8Array(await readFile(join(secondary, "templates", `${UID}.qcow2`)))).toEqual(image);
    expect(reports()).toEqual([
      { state: "Downloading", bytes: 0 },
      { state: "Ready", bytes: image.length, sha256: checksum.slice(7) },
    ]);
    // Ready and still there: nothing is fetched again.
    await settle(zone, at("/tiny.qcow2", { state: "Ready" }));
    expect(requests).toHaveLength(1);
    // Ready but gone from secondary storage: fetched again.
    await rm(join(secondary, "templates", `${UID}.qcow2`));
    await settle(zone, at("/tiny.qcow2", { state: "Ready" }));
    expect(requests).toHaveLength(2);
  });

  it("says Error with the reason and keeps no file when the checksum is wrong, and does not try again", async () => {
    const zone = images();
    const wrong = `sha256:${"0".repeat(64)}`;
    await settle(zone, at("/tiny.qcow2", {}, { checksum: wrong }));
    expect(reports().at(-1)).toEqual({
      state: "Error",
      reason: "ChecksumMismatch",
      message: `${base}/tiny.qcow2 has checksum ${checksum}, the template expects ${wrong} (host h1)`,
    });
    expect(files()).toEqual([]);
    await settle(
      zone,
      at("/tiny.qcow2", { state: "Error", reason: "ChecksumMismatch" }, { checksum: wrong }),
    );
    expect(requests).toHaveLength(1);
  });

  it("tries a failed server again only after a while", async () => {
    const zone = images();
    await settle(zone, at("/down"));
    expect(reports().at(-1)).toMatchObject({ state: "Error", reason: "DownloadFailed" });
    const failed = at("/down", { state: "Error", reason: "DownloadFailed" });
    expect(await zone.sync("tiny", failed)).toEqual({ requeueAfterMs: RETRY_AFTER_MS });
    clock += RETRY_AFTER_MS;
    await settle(zone, failed);
    expect(requests).toEqual(["/down", "/down"]);
  });

  it("takes a file under the final name as done (only a verified file gets it), after hashing it", async () => {
    await mkdir(join(secondary, "templates"), { recursive: true });
    await writeFile(join(secondary, "templates", `${UID}.qcow2`), image);
    await settle(images(), at("/tiny.qcow2", { state: "Downloading" }));
    expect(requests).toEqual([]);
    expect(reports()).toEqual([{ state: "Ready", bytes: image.length, sha256: checksum.slice(7) }]);
  });

  it("stops a download given to another host, saying nothing and leaving no file; the next run cleans its leftovers", async () => {
    const zone = images();
    await zone.sync("tiny", at("/slow"));
    await expect.poll(() => files().length).toBe(1); // the partial file, under a temporary name
    expect(files()[0]).toMatch(new RegExp(`^${UID}\\.qcow2\\.partial-h1-[0-9a-f]{8}$`));
    await zone.sync("tiny", at("/slow", { host: "h2" }));
    expect(files()).toEqual([]);
    expect(reports()).toEqual([{ state: "Downloading", bytes: 0 }]);
    // A leftover of a killed run of this host goes when it starts again; another host's stays.
    const leftover = `${UID}.qcow2.partial-h1-0badc0de`;
    const theirs = `${UID}.qcow2.partial-h1-x-0badc0de`;
    for (const name of [leftover, theirs]) await writeFile(join(secondary, "templates", name), "half");
    await settle(zone, at("/tiny.qcow2"));
    expect(files().sort()).toEqual([`${UID}.qcow2`, theirs]);
  });

  it("removes every file of the template and no other, then says Removed", async () => {
    await mkdir(join(secondary, "templates"), { recursive: true });
    const other = "6f000000-0000-4000-8000-000000000002.qcow2";
    for (const name of [`${UID}.qcow2`, `${UID}.qcow2.partial-h9-0badc0de`, other])
      await writeFile(join(secondary, "templates", name), "x");
    await images().sync("tiny", at("/tiny.qcow2", { state: "Ready", remove: true }));
    expect(files()).toEqual([other]);
    expect(reports()).toEqual([{ state: "Removed" }]);
  });
});

import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../devcluster/ports.ts";
import { qcow2Header } from "../test/fixtures/qcow2.ts";
import { checkImage, downloadOnce, fetchImage, inspectImageHeader, probeDownload } from "./images.ts";
import { HostProblem } from "./problem.ts";

const run = promisify(execFile);

describe("image headers", () => {
  it("reads a qcow2 image's virtual size and sees no backing file", () => {
    expect(inspectImageHeader(qcow2Header(10n * 2n ** 30n), 512n)).toEqual({
      format: "qcow2",
      virtualSize: 10n * 2n ** 30n,
    });
  });

  it("finds the backing file a qcow2 image names", () => {
    expect(inspectImageHeader(qcow2Header(1n << 30n, "/etc/shadow"), 512n).backingFile).toBe("/etc/shadow");
  });

  it("treats anything else as raw", () => {
    expect(inspectImageHeader(new Uint8Array(100), 100n)).toEqual({ format: "raw", virtualSize: 100n });
  });
});

describe("template images on disk and over HTTP", () => {
  let dir: string;
  let server: Server;
  let base: string;
  const image = qcow2Header(1n << 30n);
  const checksum = `sha256:${createHash("sha256").update(image).digest("hex")}`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stratus-images-"));
    server = createServer((request, response) => {
      if (request.url === "/tiny.qcow2") response.end(image);
      else if (request.url === "/to-metadata")
        response.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" }).end();
      else if (request.url === "/silent")
        return; // answers nothing, ever
      else if (request.url === "/unannounced") {
        // No Content-Length: the size shows only while streaming.
        response.writeHead(200, { "transfer-encoding": "chunked" });
        response.write(image.subarray(0, 256));
        response.end(image.subarray(256));
      } else response.writeHead(404).end("no such image");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("downloads once, verifying the checksum", async () => {
    const target = join(dir, "ok.qcow2");
    await downloadOnce(`${base}/tiny.qcow2`, target, checksum);
    expect(new Uint8Array(await readFile(target))).toEqual(image);
    await checkImage(target, "qcow2");
    await writeFile(target, "cached"); // a second call must not download again
    await downloadOnce(`${base}/tiny.qcow2`, target, checksum);
    expect(await readFile(target, "utf8")).toBe("cached");
  });

  it("refuses a checksum mismatch and keeps no file", async () => {
    const target = join(dir, "bad.qcow2");
    const wrong = `sha256:${"0".repeat(64)}`;
    await expect(downloadOnce(`${base}/tiny.qcow2`, target, wrong)).rejects.toThrow(
      new HostProblem(
        "ChecksumMismatch",
        `${base}/tiny.qcow2 has checksum ${checksum}, the template expects ${wrong}`,
      ),
    );
    expect(existsSync(target)).toBe(false);
  });

  it("reports a missing image and an unreachable server", async () => {
    await expect(downloadOnce(`${base}/missing.qcow2`, join(dir, "m"))).rejects.toThrow(
      `cannot download ${base}/missing.qcow2: HTTP 404`,
    );
    const closedPort = await freePort();
    await expect(downloadOnce(`http://127.0.0.1:${closedPort}/x.qcow2`, join(dir, "u"))).rejects.toThrow(
      `cannot download http://127.0.0.1:${closedPort}/x.qcow2: connect ECONNREFUSED 127.0.0.1:${closedPort}`,
    );
  });

  it("refuses an image with a backing file, and a format that is not the template's", async () => {
    const unsafe = join(dir, "unsafe.qcow2");
    await writeFile(unsafe, qcow2Header(1n << 30n, "/var/lib/other-tenant/disk.qcow2"));
    await expect(checkImage(unsafe, "qcow2")).rejects.toMatchObject({ reason: "UnsafeImage" });
    const fine = join(dir, "fine.qcow2");
    await writeFile(fine, qcow2Header(1n << 30n));
    await expect(checkImage(fine, "raw")).rejects.toMatchObject({ reason: "WrongImageFormat" });
  });

  it("refuses an image that keeps its data in another file (qcow2 data_file), made by qemu-img", async () => {
    const attack = join(dir, "data-file.qcow2");
    await run("qemu-img", [
      "create",
      "-f",
      "qcow2",
      "-o",
      `data_file=${join(dir, "victim.raw")}`,
      attack,
      "1M",
    ]);
    await expect(checkImage(attack, "qcow2")).rejects.toMatchObject({ reason: "UnsafeImage" });
  });

  it("follows no redirect to the instance metadata address", async () => {
    await expect(downloadOnce(`${base}/to-metadata`, join(dir, "md"))).rejects.toThrow(
      "cannot download http://169.254.169.254/latest/meta-data/: 169.254.169.254 is link-local",
    );
    expect(existsSync(join(dir, "md"))).toBe(false);
  });

  it("refuses an image over the limit, by its announced size or while it streams, and keeps no file", async () => {
    const target = join(dir, "big.qcow2");
    const tooLarge = { reason: "ImageTooLarge" };
    await expect(fetchImage(`${base}/tiny.qcow2`, target, { maxBytes: 100 })).rejects.toMatchObject(tooLarge);
    await expect(fetchImage(`${base}/unannounced`, target, { maxBytes: 300 })).rejects.toMatchObject(
      tooLarge,
    );
    expect(readdirSync(dir).filter((f) => f.startsWith("big.qcow2"))).toEqual([]);
    const fits = await fetchImage(`${base}/unannounced`, target, { maxBytes: image.length, checksum });
    expect(fits).toEqual({ path: target, sha256: checksum.slice(7), bytes: image.length });
  });

  it("reports its progress against the announced size, and an aborted fetch keeps no file", async () => {
    const seen: [number, number | undefined][] = [];
    const target = join(dir, "progress.qcow2");
    await fetchImage(`${base}/tiny.qcow2`, target, {
      onProgress: (bytes, total) => seen.push([bytes, total]),
    });
    expect(seen.at(-1)).toEqual([image.length, image.length]);
    const aborted = new AbortController();
    const late = join(dir, "late.qcow2");
    const fetching = fetchImage(`${base}/unannounced`, late, {
      signal: aborted.signal,
      onProgress: () => aborted.abort(), // after the first chunk
    });
    await expect(fetching).rejects.toMatchObject({ name: "AbortError" });
    expect(readdirSync(dir).filter((f) => f.startsWith("late.qcow2"))).toEqual([]);
  });

  it("probes a URL as registerTemplate does: 200 passes, the rest is refused with the reason", async () => {
    await expect(probeDownload(`${base}/tiny.qcow2`)).resolves.toBeUndefined();
    await expect(probeDownload(`${base}/missing.qcow2`)).rejects.toThrow(
      `cannot download ${base}/missing.qcow2: HTTP 404`,
    );
    await expect(probeDownload("http://169.254.169.254/latest/meta-data/")).rejects.toThrow(/is link-local/);
    await expect(probeDownload(`${base}/to-metadata`)).rejects.toThrow(/is link-local/);
    await expect(probeDownload(`${base}/silent`, 300)).rejects.toThrow("no answer for 0.3 s");
  });
});

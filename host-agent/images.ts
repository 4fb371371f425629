// Disk images a host agent accepts. A qcow2 image can name a backing file that QEMU then opens
// too; an image from a template URL that points at, say, /etc/shadow or another tenant's disk is a
// known escape. The agent reads the qcow2 header itself and refuses any image with a backing file
// it did not create.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, type ReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { get as httpGet } from "node:http";
import { get as httpsGet } from "node:https";
import { dirname } from "node:path";
import { pipeline } from "node:stream/promises";
import { HostProblem } from "./problem.ts";

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

export interface ImageFacts {
  format: "qcow2" | "raw";
  /** For qcow2: the virtual disk size in bytes; for raw: the file size. */
  virtualSize: bigint;
  backingFile?: string;
}

/** Reads format, size and backing file from the first bytes of an image (the qcow2 header). */
export function inspectImageHeader(header: Uint8Array, fileSize: bigint): ImageFacts {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (header.byteLength < 32 || view.getUint32(0) !== QCOW2_MAGIC)
    return { format: "raw", virtualSize: fileSize };
  const backingOffset = view.getBigUint64(8);
  const backingLength = view.getUint32(16);
  const virtualSize = view.getBigUint64(24);
  if (backingOffset === 0n || backingLength === 0) return { format: "qcow2", virtualSize };
  const start = Number(backingOffset);
  if (start + backingLength > header.byteLength) {
    return { format: "qcow2", virtualSize, backingFile: "(beyond the header that was read)" };
  }
  return {
    format: "qcow2",
    virtualSize,
    backingFile: new TextDecoder().decode(header.subarray(start, start + backingLength)),
  };
}

export async function inspectImage(path: string): Promise<ImageFacts> {
  const file = await open(path, "r");
  try {
    const header = new Uint8Array(64 * 1024);
    const { bytesRead } = await file.read(header, 0, header.length, 0);
    return inspectImageHeader(header.subarray(0, bytesRead), BigInt((await file.stat()).size));
  } finally {
    await file.close();
  }
}

/** Refuses images that would make QEMU open a file the agent did not create. */
export async function checkImage(path: string, expectedFormat: "qcow2" | "raw"): Promise<ImageFacts> {
  const facts = await inspectImage(path);
  if (facts.backingFile !== undefined) {
    throw new HostProblem(
      "UnsafeImage",
      `image ${path} names a backing file (${facts.backingFile}); images with backing files are refused`,
    );
  }
  if (facts.format !== expectedFormat) {
    throw new HostProblem(
      "WrongImageFormat",
      `image ${path} is ${facts.format}, but the template says ${expectedFormat}`,
    );
  }
  return facts;
}

/**
 * Downloads `url` (or copies an absolute path on this host) to `target`, through a temporary file
 * renamed when complete, verifying a sha256 checksum when one is given. An existing target is reused.
 */
export async function downloadOnce(url: string, target: string, checksum?: string): Promise<void> {
  try {
    await stat(target);
    return;
  } catch {}
  await mkdir(dirname(target), { recursive: true });
  const partial = `${target}.partial-${process.pid}`;
  try {
    const response = url.startsWith("/") ? await readLocal(url) : await get(url);
    const hash = createHash("sha256");
    await pipeline(
      response,
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          hash.update(chunk);
          yield chunk;
        }
      },
      createWriteStream(partial),
    );
    const actual = `sha256:${hash.digest("hex")}`;
    if (checksum && actual !== checksum) {
      throw new HostProblem(
        "ChecksumMismatch",
        `${url} has checksum ${actual}, the template expects ${checksum}`,
      );
    }
    await rename(partial, target);
  } finally {
    await rm(partial, { force: true });
  }
}

async function readLocal(path: string): Promise<ReadStream> {
  try {
    await stat(path);
  } catch (error) {
    throw new HostProblem("DownloadFailed", `cannot read ${path}: ${(error as Error).message}`);
  }
  return createReadStream(path);
}

/**
 * GET with redirects, as a stream. node:http rather than fetch: undici's parser asserts (and takes
 * the process down) on some HTTP/1.0 servers that close the connection to end the body.
 */
function get(url: string, redirects = 5): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const fail = (message: string) =>
      reject(new HostProblem("DownloadFailed", `cannot download ${url}: ${message}`));
    const request = (url.startsWith("https:") ? httpsGet : httpGet)(url, { timeout: 60_000 }, (response) => {
      const status = response.statusCode ?? 0;
      if (status >= 300 && status < 400 && response.headers.location && redirects > 0) {
        response.resume();
        get(new URL(response.headers.location, url).toString(), redirects - 1).then(resolve, reject);
      } else if (status !== 200) {
        response.resume();
        fail(`HTTP ${status}`);
      } else {
        resolve(response);
      }
    });
    request.on("timeout", () => request.destroy(new Error("no answer for 60 s")));
    request.on("error", (error) => fail(error.message));
  });
}

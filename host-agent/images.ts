// Disk images a host agent accepts. A qcow2 image can name a backing file that QEMU then opens
// too; an image from a template URL that points at, say, /etc/shadow or another tenant's disk is a
// known escape. The agent reads the qcow2 header itself and refuses any image with a backing file
// it did not create.
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { get as httpGet } from "node:http";
import { get as httpsGet } from "node:https";
import { isIP } from "node:net";
import { dirname } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type AddressReach, addressReach, guardedLookup, refusedAddress } from "./download-policy.ts";
import { HostProblem } from "./problem.ts";

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

export interface ImageFacts {
  format: "qcow2" | "raw";
  /** For qcow2: the virtual disk size in bytes; for raw: the file size. */
  virtualSize: bigint;
  backingFile?: string;
  /** A qcow2 v3 image whose data lives in another file the header names (QEMU opens that file). */
  externalDataFile?: true;
}

/** Reads format, size and backing file from the first bytes of an image (the qcow2 header). */
export function inspectImageHeader(header: Uint8Array, fileSize: bigint): ImageFacts {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (header.byteLength < 32 || view.getUint32(0) !== QCOW2_MAGIC)
    return { format: "raw", virtualSize: fileSize };
  const backingOffset = view.getBigUint64(8);
  const backingLength = view.getUint32(16);
  const virtualSize = view.getBigUint64(24);
  // Version 3 headers carry incompatible feature bits at 72; bit 2 is "external data file".
  const externalData =
    view.getUint32(4) >= 3 && header.byteLength >= 80 && (view.getBigUint64(72) & 4n) !== 0n
      ? { externalDataFile: true as const }
      : {};
  if (backingOffset === 0n || backingLength === 0) return { format: "qcow2", virtualSize, ...externalData };
  const start = Number(backingOffset);
  if (start + backingLength > header.byteLength) {
    return {
      format: "qcow2",
      virtualSize,
      backingFile: "(beyond the header that was read)",
      ...externalData,
    };
  }
  return {
    format: "qcow2",
    virtualSize,
    backingFile: new TextDecoder().decode(header.subarray(start, start + backingLength)),
    ...externalData,
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
  if (facts.externalDataFile) {
    throw new HostProblem(
      "UnsafeImage",
      `image ${path} keeps its data in an external data file; such images are refused`,
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

/** CloudStack's max.template.iso.size: an image bigger than 50 GiB is refused. */
export const MAX_IMAGE_BYTES = 50 * 2 ** 30;

export interface VerifiedWrite {
  /** The sha256 (hex) the bytes must have, and the error when they do not. */
  expect?: { sha256: string; mismatch: (actual: string) => HostProblem };
  /** Runs on the complete temporary file before it gets its name (e.g. checkImage). */
  check?: (partial: string) => Promise<unknown>;
  maxBytes?: number;
  /** What is written, for the error when it is larger than maxBytes. */
  what?: string;
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
  mode?: number;
  /** Names the writer in the temporary name (`<target>.partial-<tag>-…`), so it can find its own leftovers. */
  tag?: string;
}

/**
 * Streams `source` into `target` through a temporary name of its own, hashing and counting as it
 * writes; the file gets its real name only once complete, within its limit, hashed right and
 * checked. A crash or an error never leaves a half file under the real name. The caller makes
 * the directory first: `source` is piped at once, so none of its errors goes unheard.
 */
export async function writeVerified(
  source: Readable,
  target: string,
  options: VerifiedWrite = {},
): Promise<{ path: string; sha256: string; bytes: number }> {
  // Unique per write: two writers of one target (two VMs, two hosts) never share a half file.
  const partial = `${target}${PARTIAL_MARK}${options.tag ? `${options.tag}-` : ""}${randomBytes(4).toString("hex")}`;
  const hash = createHash("sha256");
  let bytes = 0;
  const { maxBytes } = options;
  try {
    await pipeline(
      source,
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          bytes += chunk.length;
          if (maxBytes !== undefined && bytes > maxBytes) throw tooLarge(options.what ?? target, maxBytes);
          hash.update(chunk);
          options.onProgress?.(bytes);
          yield chunk;
        }
      },
      createWriteStream(partial, { mode: options.mode ?? 0o644 }),
      ...(options.signal ? [{ signal: options.signal }] : []),
    );
    const actual = hash.digest("hex");
    if (options.expect && actual !== options.expect.sha256) throw options.expect.mismatch(actual);
    await options.check?.(partial);
    await rename(partial, target);
    return { path: target, sha256: actual, bytes };
  } finally {
    await rm(partial, { force: true });
  }
}

/** What marks an unfinished write in a file's name (see writeVerified). */
export const PARTIAL_MARK = ".partial-";

const tooLarge = (what: string, maxBytes: number) =>
  new HostProblem("ImageTooLarge", `${what} is larger than ${maxBytes} bytes, the largest image accepted`);

export interface ImageFetch {
  /** sha256:<hex> the image must have. */
  checksum?: string;
  check?: (partial: string) => Promise<unknown>;
  maxBytes?: number;
  /** Bytes so far, and the size the source announced when it did. */
  onProgress?: (bytes: number, totalBytes: number | undefined) => void;
  signal?: AbortSignal;
  tag?: string;
}

/**
 * Fetches `source` (an http(s) URL, or an absolute path on this host) to `target` with
 * writeVerified, checking the template's checksum when one is given.
 */
export async function fetchImage(
  source: string,
  target: string,
  options: ImageFetch = {},
): Promise<{ path: string; sha256: string; bytes: number }> {
  const maxBytes = options.maxBytes ?? MAX_IMAGE_BYTES;
  await mkdir(dirname(target), { recursive: true });
  const { stream, totalBytes } = source.startsWith("/") ? await readLocal(source) : await get(source);
  if (totalBytes !== undefined && totalBytes > maxBytes) {
    stream.destroy();
    throw tooLarge(source, maxBytes);
  }
  const expected = options.checksum?.replace(/^sha256:/, "");
  return writeVerified(stream, target, {
    ...(expected
      ? {
          expect: {
            sha256: expected,
            mismatch: (actual) =>
              new HostProblem(
                "ChecksumMismatch",
                `${source} has checksum sha256:${actual}, the template expects ${options.checksum}`,
              ),
          },
        }
      : {}),
    ...(options.check ? { check: options.check } : {}),
    maxBytes,
    what: source,
    ...(options.onProgress ? { onProgress: (bytes: number) => options.onProgress?.(bytes, totalBytes) } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.tag ? { tag: options.tag } : {}),
  });
}

/**
 * Whether `url` answers 200 where download-policy.ts lets the agents go, without reading the body:
 * registerTemplate asks before it accepts a URL, as CloudStack's management server does.
 */
export async function probeDownload(url: string, timeoutMs = 15_000): Promise<void> {
  const { stream } = await get(url, 5, {}, timeoutMs);
  stream.destroy();
}

/** Fetches `url` (or copies an absolute path on this host) to `target` unless it is there already. */
export async function downloadOnce(url: string, target: string, checksum?: string): Promise<void> {
  try {
    await stat(target);
    return;
  } catch {}
  await fetchImage(url, target, checksum ? { checksum } : {});
}

async function readLocal(path: string): Promise<{ stream: Readable; totalBytes: number }> {
  try {
    const { size } = await stat(path);
    return { stream: createReadStream(path), totalBytes: size };
  } catch (error) {
    throw new HostProblem("DownloadFailed", `cannot read ${path}: ${(error as Error).message}`);
  }
}

/**
 * GET with redirects, as a stream. node:http rather than fetch: undici's parser asserts (and takes
 * the process down) on some HTTP/1.0 servers that close the connection to end the body. Every
 * connection, the redirects' too, goes only where download-policy.ts allows.
 */
function get(
  url: string,
  redirects = 5,
  reach: { origin?: AddressReach } = {},
  timeoutMs = 60_000,
): Promise<{ stream: Readable; totalBytes: number | undefined }> {
  return new Promise((resolve, reject) => {
    const fail = (message: string) =>
      reject(new HostProblem("DownloadFailed", `cannot download ${url}: ${message}`));
    const parsed = new URL(url);
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return fail("only http and https");
    // An address in the URL is connected to without a lookup: it is checked here instead.
    const literal = parsed.hostname.replace(/^\[|\]$/g, "");
    if (isIP(literal)) {
      const why = refusedAddress(literal, reach.origin);
      if (why) return fail(why);
      reach.origin ??= addressReach(literal);
    }
    const options = { timeout: timeoutMs, lookup: guardedLookup(reach) };
    const request = (parsed.protocol === "https:" ? httpsGet : httpGet)(url, options, (response) => {
      const status = response.statusCode ?? 0;
      if (status >= 300 && status < 400 && response.headers.location && redirects > 0) {
        response.resume();
        get(new URL(response.headers.location, url).toString(), redirects - 1, reach, timeoutMs).then(
          resolve,
          reject,
        );
      } else if (status !== 200) {
        response.resume();
        fail(`HTTP ${status}`);
      } else {
        const length = Number(response.headers["content-length"]);
        resolve({ stream: response, totalBytes: Number.isSafeInteger(length) ? length : undefined });
      }
    });
    request.on("timeout", () => request.destroy(new Error(`no answer for ${timeoutMs / 1000} s`)));
    request.on("error", (error) => fail(error.message));
  });
}

// Helpers shared by the integration tests: the shared control plane, a namespace per test file,
// the built kubectl, and waiting on conditions (never on fixed sleeps).
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import { inject } from "vitest";
import type WebSocket from "ws";
import { LocalControlPlane } from "../../devcluster/controlplane.ts";
import { clusterIdentity } from "../../host-agent/registration.ts";
import { isNotFound, type KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import { qcow2Header } from "../fixtures/qcow2.ts";
import { afterThisFile } from "./file-cleanup.ts";

export function sharedControlPlane(): Promise<LocalControlPlane> {
  return LocalControlPlane.open(inject("controlPlaneDir"));
}

/** Creates a cluster-scoped catalog object (zone, offering, template) and answers its UID. */
export async function createdUid(
  client: KubeClient,
  type: ResourceType,
  name: string,
  spec: object,
): Promise<string> {
  return (await client.create(type, { metadata: { name }, spec } as KubeObject)).metadata.uid as string;
}

/** A fresh namespace for the calling test file, deleted after it. */
export async function useNamespace(kubeConfig: KubeConfig, prefix = "t"): Promise<string> {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const name = `${prefix}-${randomBytes(4).toString("hex")}`;
  await core.createNamespace({ body: { metadata: { name, labels: { "stratus.io/test": "true" } } } });
  afterThisFile(() => core.deleteNamespace({ name }).catch(() => {}));
  return name;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/** Polls until `check` returns a value other than undefined/false, and returns it. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 60_000, intervalMs = 200 }: WaitOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ""}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(
  command: string,
  args: readonly string[],
  options: { input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(
      command,
      args,
      { env: options.env ?? process.env, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Runs the built kubectl against the control plane with the given kubeconfig. */
export function kubectl(
  kubeconfigPath: string,
  args: readonly string[],
  input?: string,
): Promise<CommandResult> {
  return run(
    inject("binaries").kubectl,
    ["--kubeconfig", kubeconfigPath, ...args],
    input === undefined ? {} : { input },
  );
}

/** Waits until the object no longer exists (deleted, finalizers done). */
export function waitUntilGone(
  client: KubeClient,
  type: ResourceType,
  name: string,
  namespace?: string,
  options?: WaitOptions,
) {
  return waitFor(
    `${type.kind} ${namespace ? `${namespace}/` : ""}${name} to be gone`,
    () => client.get(type, name, namespace).then(() => false, isNotFound),
    options,
  );
}

/** The HTTP status of a failed client-node call, or undefined. */
export function statusCode(error: unknown): number | undefined {
  return (error as { code?: number }).code;
}

/**
 * Serves a 1 GiB qcow2 image header at <base>/tiny.qcow2 (anything else is 404) for the calling
 * file's Templates; the server closes after the file.
 */
export async function serveTinyImage(): Promise<{
  base: string;
  url: string;
  checksum: string;
  image: Uint8Array;
}> {
  const image = qcow2Header(2n ** 30n);
  const server = createServer((request, response) => {
    if (request.url === "/tiny.qcow2") response.end(image);
    else response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  afterThisFile(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    url: `${base}/tiny.qcow2`,
    checksum: `sha256:${createHash("sha256").update(image).digest("hex")}`,
    image,
  };
}

/**
 * Builds (or reuses) the tiny guest and serves its kernel and initrd over HTTP for a direct-boot
 * Template, until the calling file ends. Returns the spec.source of such a Template.
 */
export async function serveTinyGuest(): Promise<{
  directBoot: { kernel: string; initrd: string; commandLine: string };
}> {
  const guest = (await run("bash", ["test/images/build-tiny-guest.sh"])).stdout.trim();
  const server = createServer(async (request, response) => {
    const file = { "/vmlinuz": "vmlinuz", "/initrd.gz": "initrd.gz" }[request.url ?? ""];
    if (file) response.end(await readFile(join(guest, file)));
    else response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  afterThisFile(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    directBoot: { kernel: `${base}/vmlinuz`, initrd: `${base}/initrd.gz`, commandLine: "console=ttyS0" },
  };
}

/**
 * Reads a console WebSocket (as `openConsole` returns it) until `text` has appeared, then closes
 * it; the whole output so far, since a chunk may end in the middle of a line.
 */
export function readWebConsoleUntil(console: WebSocket, text: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => {
      console.close();
      reject(new Error(`the console never showed "${text}"; it showed:\n${output.slice(-2000)}`));
    }, timeoutMs);
    console.on("message", (data: Buffer) => {
      output += data.toString("latin1");
      if (output.includes(text)) {
        clearTimeout(timer);
        console.close();
        resolve(output);
      }
    });
  });
}

/** The mark a host agent puts on what it creates in libvirt: its cluster and host. */
export async function agentOwner(
  client: KubeClient,
  host: string,
): Promise<{ cluster: string; host: string }> {
  return { cluster: await clusterIdentity(client), host };
}

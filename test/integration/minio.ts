// MinIO, a real S3-compatible store, for the tests: built once from its Go module
// (devcluster/binaries.ts ensureTestTool), run on a free port with a data directory of its own.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { ensureTestTool } from "../../devcluster/binaries.ts";
import { freePort } from "../../devcluster/ports.ts";
import { waitFor } from "./support.ts";

export interface Minio {
  endpoint: string;
  /** What a client signs with: the variables the AWS SDK reads. */
  credentials: { AWS_ACCESS_KEY_ID: string; AWS_SECRET_ACCESS_KEY: string };
  client: S3Client;
  createBucket(name: string): Promise<void>;
  logs(): string;
  stop(): Promise<void>;
}

export async function startMinio(dataDir: string): Promise<Minio> {
  const binary = await ensureTestTool("minio", {
    progress: (message) => process.stderr.write(`[minio] ${message}\n`),
  });
  const [port, consolePort] = [await freePort(), await freePort()];
  const credentials = {
    AWS_ACCESS_KEY_ID: `stratus${randomBytes(4).toString("hex")}`,
    AWS_SECRET_ACCESS_KEY: randomBytes(18).toString("base64url"),
  };
  const child: ChildProcess = spawn(
    binary,
    ["server", dataDir, "--address", `127.0.0.1:${port}`, "--console-address", `127.0.0.1:${consolePort}`],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        PATH: process.env.PATH ?? "",
        HOME: dataDir,
        MINIO_ROOT_USER: credentials.AWS_ACCESS_KEY_ID,
        MINIO_ROOT_PASSWORD: credentials.AWS_SECRET_ACCESS_KEY,
        MINIO_BROWSER: "off",
      },
    },
  );
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const endpoint = `http://127.0.0.1:${port}`;
  await waitFor(
    "MinIO to serve",
    async () => {
      if (child.exitCode !== null) throw new Error(`minio exited with ${child.exitCode}:\n${output}`);
      return (await fetch(`${endpoint}/minio/health/live`).catch(() => undefined))?.status === 200;
    },
    { timeoutMs: 60_000 },
  );
  const client = new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: {
      accessKeyId: credentials.AWS_ACCESS_KEY_ID,
      secretAccessKey: credentials.AWS_SECRET_ACCESS_KEY,
    },
  });
  return {
    endpoint,
    credentials,
    client,
    async createBucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    logs: () => output,
    async stop() {
      client.destroy();
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

// Runs stratus-operator as a real process for tests, with its own health port and log capture.
import { type ChildProcess, spawn } from "node:child_process";
import { freePort, isAlive } from "../../devcluster/controlplane.ts";
import { waitFor } from "./support.ts";

export interface OperatorProcess {
  child: ChildProcess;
  identity: string;
  healthUrl: string;
  logs: () => string;
  /** Sends a signal and waits for the process to exit; resolves to its exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  get(path: string): Promise<{ status: number; body: string }>;
}

export async function startOperator(options: {
  kubeconfigPath: string;
  identity: string;
  args?: string[];
}): Promise<OperatorProcess> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      "operator/main.ts",
      `--kubeconfig=${options.kubeconfigPath}`,
      `--identity=${options.identity}`,
      `--health-address=127.0.0.1:${port}`,
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, STRATUS_LOG_LEVEL: "debug" } },
  );
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const healthUrl = `http://127.0.0.1:${port}`;
  const operator: OperatorProcess = {
    child,
    identity: options.identity,
    healthUrl,
    logs: () => output,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.pid !== undefined && isAlive(child.pid)) child.kill(signal);
      return exited;
    },
    async get(path) {
      const response = await fetch(`${healthUrl}${path}`);
      return { status: response.status, body: await response.text() };
    },
  };
  await waitFor(
    `operator ${options.identity} to serve /healthz`,
    async () => {
      if (child.exitCode !== null) throw new Error(`the operator exited with ${child.exitCode}:\n${output}`);
      return (await operator.get("/healthz")).status === 200;
    },
    { timeoutMs: 30_000 },
  );
  return operator;
}

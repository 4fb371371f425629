// A VM's serial console through the Kubernetes API server (the aggregated API
// subresources.stratus.io), authenticated with the caller's kubeconfig, like `virtctl console`.
import type { KubeConfig } from "@kubernetes/client-node";
import WebSocket from "ws";
import { SUBRESOURCE_GROUP, SUBRESOURCE_VERSION } from "../apiserver/subresources.ts";

/** Opens the console WebSocket; rejects with the HTTP status when the API server refuses. */
export async function openConsole(
  kubeConfig: KubeConfig,
  namespace: string,
  name: string,
): Promise<WebSocket> {
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw new Error("the kubeconfig has no current cluster");
  const tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; headers?: Record<string, string> } = {};
  await kubeConfig.applyToHTTPSOptions(tls as never);
  const url = `${cluster.server.replace(/^http/, "ws").replace(/\/$/, "")}/apis/${SUBRESOURCE_GROUP}/${SUBRESOURCE_VERSION}/namespaces/${encodeURIComponent(namespace)}/virtualmachines/${encodeURIComponent(name)}/console`;
  const socket = new WebSocket(url, {
    ...(tls.ca ? { ca: tls.ca } : {}),
    ...(tls.cert ? { cert: tls.cert } : {}),
    ...(tls.key ? { key: tls.key } : {}),
    ...(tls.headers ? { headers: tls.headers } : {}),
  });
  return new Promise((resolve, reject) => {
    socket.once("open", () => resolve(socket));
    socket.once("unexpected-response", (_, response) =>
      reject(
        new ConsoleRefused(
          response.statusCode ?? 0,
          `the API server refused the console: HTTP ${response.statusCode}`,
        ),
      ),
    );
    socket.once("error", reject);
  });
}

export class ConsoleRefused extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** `stratus console`: the terminal's input goes to the guest, its output to the terminal; Ctrl-] leaves. */
export async function attachTerminal(socket: WebSocket): Promise<void> {
  const stdin = process.stdin;
  if (stdin.isTTY) stdin.setRawMode(true);
  process.stderr.write("Connected to the serial console (Ctrl-] to leave).\r\n");
  socket.on("message", (data: Buffer) => process.stdout.write(data));
  stdin.on("data", (chunk: Buffer) => {
    if (chunk.includes(0x1d)) socket.close();
    else socket.send(chunk);
  });
  await new Promise<void>((resolve) => socket.once("close", () => resolve()));
  if (stdin.isTTY) stdin.setRawMode(false);
  stdin.pause();
}

// Network namespaces that play guests and "the outside" in router tests: attached to a bridge by
// a veth pair, with Node as their web client and server (busybox's wget crashes in a namespace).
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { afterThisFile } from "./file-cleanup.ts";

const run = promisify(execFile);
export const ip = (...args: string[]) => run("ip", args);

/** An HTTP GET from a namespace (Node's fetch, 2 s): the body, or "unreachable". */
export async function fetchFrom(namespace: string, url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(2000) }).then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(1))`;
  try {
    return (await run("ip", ["netns", "exec", namespace, process.execPath, "-e", script])).stdout;
  } catch {
    return "unreachable";
  }
}

/** A namespace on `bridge` through a veth pair, with an address and (for guests) a default route. */
export async function attachNamespace(namespace: string, bridge: string, address?: string, gateway?: string) {
  await ip("netns", "add", namespace);
  const host = `v${namespace.replace(/-/g, "").slice(-10)}`;
  await ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", namespace);
  await ip("link", "set", "dev", host, "master", bridge, "up");
  await ip("-n", namespace, "link", "set", "dev", "lo", "up");
  await ip("-n", namespace, "link", "set", "dev", "eth0", "up");
  if (address) await ip("-n", namespace, "addr", "add", address, "dev", "eth0");
  if (gateway) await ip("-n", namespace, "route", "add", "default", "via", gateway);
}

export interface NamespaceServer {
  process: ChildProcess;
  /** The source address of every connection so far, in order. */
  peers: string[];
}

/**
 * A web server in a namespace on `address:port` answering "<name> from <the caller's address>";
 * it records every connection's source. Killed when the calling file ends.
 */
export async function serveIn(
  namespace: string,
  address: string,
  name: string,
  port = 80,
): Promise<NamespaceServer> {
  const script = `const s = require("node:http").createServer((q, r) => r.end(${JSON.stringify(name)} + " from " + q.socket.remoteAddress)); s.on("connection", (c) => console.log("peer " + c.remoteAddress)); s.listen(${port}, ${JSON.stringify(address)}, () => console.log("listening"))`;
  const server = spawn("ip", ["netns", "exec", namespace, process.execPath, "-e", script]);
  const peers: string[] = [];
  afterThisFile(() => server.kill());
  await new Promise<void>((resolve, reject) => {
    server.stdout?.on("data", (chunk: Buffer) => {
      for (const line of chunk.toString().split("\n")) {
        if (line === "listening") resolve();
        if (line.startsWith("peer ")) peers.push(line.slice(5));
      }
    });
    server.once("exit", (code) => reject(new Error(`the server in ${namespace} exited with ${code}`)));
  });
  return { process: server, peers };
}

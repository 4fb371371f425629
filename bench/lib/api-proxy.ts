// A TCP relay between one host agent and the API server that can be cut: the agent keeps running
// (and so do its guests) but no request of it arrives, as in a network partition. TLS passes
// through untouched, so the agent still verifies the API server's certificate.
import { readFile, writeFile } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { parse, stringify } from "yaml";

export class ApiProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private cut = false;
  port = 0;

  private constructor(target: { host: string; port: number }) {
    this.server = createServer((client) => {
      if (this.cut) {
        client.destroy();
        return;
      }
      const upstream = createConnection(target);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
  }

  /** Listens on loopback and writes a kubeconfig like `kubeconfigPath` that goes through the relay. */
  static async start(kubeconfigPath: string, proxiedPath: string): Promise<ApiProxy> {
    const config = parse(await readFile(kubeconfigPath, "utf8")) as {
      clusters: { cluster: { server: string } }[];
    };
    const cluster = config.clusters[0]?.cluster as { server: string };
    const server = new URL(cluster.server);
    const proxy = new ApiProxy({ host: server.hostname, port: Number(server.port) });
    await new Promise<void>((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    proxy.port = (proxy.server.address() as { port: number }).port;
    cluster.server = `https://127.0.0.1:${proxy.port}`;
    await writeFile(proxiedPath, stringify(config), { mode: 0o600 });
    return proxy;
  }

  /** Drops every connection and refuses new ones. */
  cutOff(): void {
    this.cut = true;
    for (const socket of this.sockets) socket.destroy();
  }

  restore(): void {
    this.cut = false;
  }

  async close(): Promise<void> {
    this.cutOff();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

// The HTTP endpoints of every Stratus process: /healthz (the process works), /readyz (it can do
// its job: the API server answers and its caches are synced) and /metrics (Prometheus).
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { KubeClient } from "./client.ts";
import type { RuntimeMetrics } from "./metrics.ts";

export type Check = () => Promise<string | undefined> | string | undefined;

export interface HealthServerOptions {
  metrics: RuntimeMetrics;
  /** Extra JSON endpoints, e.g. /debug/domains. */
  debug?: Record<string, () => Promise<unknown>>;
  /** Named readiness checks; each returns undefined when fine, or why it is not. */
  readiness: Record<string, Check>;
  host?: string;
  port: number;
}

export class HealthServer {
  private readonly server: Server;
  private readonly options: HealthServerOptions;

  constructor(options: HealthServerOptions) {
    this.options = options;
    this.server = createServer((request, response) => {
      // A failing handler (a debug page asked before the process is up) is a 500, never a crash.
      void this.handle(request.url ?? "/", request.socket.remoteAddress)
        .catch((error: unknown) => ({
          status: 500,
          body: `${error instanceof Error ? error.message : String(error)}\n`,
          contentType: "text/plain",
        }))
        .then(({ status, body, contentType }) => {
          response.writeHead(status, { "content-type": contentType });
          response.end(body);
        });
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.options.port, this.options.host ?? "127.0.0.1", resolve);
    });
    return (this.server.address() as AddressInfo).port;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async handle(
    url: string,
    peer: string | undefined,
  ): Promise<{ status: number; body: string; contentType: string }> {
    const path = url.split("?")[0];
    if (path === "/healthz" || path === "/livez")
      return { status: 200, body: "ok\n", contentType: "text/plain" };
    if (path === "/readyz") {
      const failures: string[] = [];
      for (const [name, check] of Object.entries(this.options.readiness)) {
        const problem = await Promise.resolve()
          .then(check)
          .catch((error: unknown) => String(error));
        if (problem) failures.push(`[-] ${name}: ${problem}`);
      }
      return failures.length === 0
        ? { status: 200, body: "ok\n", contentType: "text/plain" }
        : { status: 503, body: `${failures.join("\n")}\n`, contentType: "text/plain" };
    }
    if (path === "/metrics") {
      return {
        status: 200,
        body: await this.options.metrics.registry.metrics(),
        contentType: this.options.metrics.registry.contentType,
      };
    }
    const debug = path ? this.options.debug?.[path] : undefined;
    // Debug pages name guests and networks: on a host network (the agent's DaemonSet) every address
    // of the host serves this port, so they answer only a process on the host itself.
    if (debug && !isLoopback(peer))
      return { status: 403, body: "debug pages answer only on loopback\n", contentType: "text/plain" };
    if (debug)
      return {
        status: 200,
        body: `${JSON.stringify(await debug(), null, 2)}\n`,
        contentType: "application/json",
      };
    return { status: 404, body: "not found\n", contentType: "text/plain" };
  }
}

function isLoopback(address: string | undefined): boolean {
  return address !== undefined && /^(127\.|::1$|::ffff:127\.)/.test(address);
}

/** Readiness check: the API server answers within two seconds. */
export function apiServerCheck(client: KubeClient): Check {
  return async () => {
    try {
      await client.request("GET", "/version", { verb: "get", resource: "version", timeoutMs: 2_000 });
      return undefined;
    } catch (error) {
      return `the API server does not answer (${error instanceof Error ? error.message : String(error)})`;
    }
  };
}

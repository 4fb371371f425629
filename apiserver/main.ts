#!/usr/bin/env node
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
// stratus-apiserver: the CloudStack-compatible API (/client/api). Stateless: run as many replicas
// as you like behind one Service.
import { createServer, type IncomingMessage } from "node:http";
import { parseArgs } from "node:util";
import { isAlreadyExists, KubeClient, type KubeObject } from "../runtime/client.ts";
import { InformerFactory } from "../runtime/component.ts";
import { kubeConfigFrom } from "../runtime/config.ts";
import { readConsolePrivateKey } from "../runtime/console-ticket.ts";
import { apiServerCheck, HealthServer } from "../runtime/health.ts";
import { createLogger } from "../runtime/logger.ts";
import { RuntimeMetrics } from "../runtime/metrics.ts";
import { CloudStackApi, SECRET } from "./api.ts";
import { ApiError, ERROR, errorBody, render } from "./envelope.ts";
import { jobController } from "./jobs.ts";
import { keyPairStatusController } from "./keypair-status.ts";
import { CONFIG_MAP } from "./session-revocations.ts";
import { SubresourceServer } from "./subresources.ts";

const HELP = `stratus-apiserver: the CloudStack-compatible API of Stratus.

Options:
  --listen=HOST:PORT         where /client/api is served (default 127.0.0.1:8080)
  --kubeconfig=PATH          default $KUBECONFIG, else the in-cluster service account
  --keys-namespace=NS        namespace of the API key Secrets (label stratus.io/api-key; default stratus-system)
  --health-address=HOST:PORT /healthz, /readyz, /metrics (default 127.0.0.1:8083)
  --subresources-listen=HOST:PORT serve the aggregated API subresources.stratus.io (HTTPS; off when unset)
  --tls-cert-file, --tls-key-file   its serving certificate (the APIService's caBundle must sign it)
  --console-key-file=PATH    the Ed25519 private key (PEM) console tickets are signed with; the host
                             agents hold its public half
  The front-proxy CA and allowed names come from kube-system/extension-apiserver-authentication.
`;

/** userdata may be 32 KiB decoded (~43 KiB base64) plus the rest: 1 MiB is plenty. */
const MAX_BODY_BYTES = 1024 * 1024;

function hostPort(value: string, flag: string): { host: string; port: number } {
  const [host, port] = value.split(/:(?=\d+$)/);
  if (!host || !Number.isInteger(Number(port))) {
    process.stderr.write(`stratus-apiserver: --${flag} must be HOST:PORT, not "${value}"\n`);
    process.exit(2);
  }
  return { host, port: Number(port) };
}

async function readForm(request: IncomingMessage): Promise<URLSearchParams> {
  const type = request.headers["content-type"] ?? "";
  if (request.method !== "POST" || !type.startsWith("application/x-www-form-urlencoded")) {
    request.resume();
    return new URLSearchParams();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES)
      throw new ApiError(ERROR.MALFORMED_PARAMETER, "the request body is larger than 1 MiB");
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

/**
 * Whether the client reached us over TLS: this socket, or the proxy in front that says so. A
 * client that lies only makes its own cookies Secure.
 */
function reachedOverTls(request: IncomingMessage): boolean {
  if ((request.socket as { encrypted?: boolean }).encrypted) return true;
  const forwarded = request.headers["x-forwarded-proto"];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(",")[0];
  return first?.trim().toLowerCase() === "https";
}

/** The aggregated API server, trusting the front proxy kube-apiserver publishes for extension servers. */
async function startSubresources(
  client: KubeClient,
  logger: ReturnType<typeof createLogger>,
  options: {
    listen: { host: string; port: number };
    certFile?: string | undefined;
    keyFile?: string | undefined;
    consoleKeyFile?: string | undefined;
  },
): Promise<SubresourceServer> {
  if (!options.certFile || !options.keyFile) {
    process.stderr.write(
      "stratus-apiserver: --subresources-listen needs --tls-cert-file and --tls-key-file\n",
    );
    process.exit(2);
  }
  const authentication = await client.get<KubeObject & { data?: Record<string, string> }>(
    CONFIG_MAP,
    "extension-apiserver-authentication",
    "kube-system",
  );
  const clientCa = authentication.data?.["requestheader-client-ca-file"];
  if (!clientCa) {
    process.stderr.write(
      "stratus-apiserver: the API server publishes no front-proxy CA (requestheader-client-ca-file)\n",
    );
    process.exit(2);
  }
  const server = new SubresourceServer({
    client,
    logger,
    tls: {
      cert: await readFile(options.certFile, "utf8"),
      key: await readFile(options.keyFile, "utf8"),
      clientCa,
    },
    allowedNames: JSON.parse(authentication.data?.["requestheader-allowed-names"] ?? "[]") as string[],
    ...(options.consoleKeyFile
      ? { consoleKey: readConsolePrivateKey(await readFile(options.consoleKeyFile, "utf8")) }
      : {}),
  });
  const port = await server.listen(options.listen.host, options.listen.port);
  logger.info({ listen: `${options.listen.host}:${port}` }, "aggregated API subresources.stratus.io serving");
  return server;
}

/**
 * The key login sessions are signed with, the same in every replica: a Secret the first replica
 * creates (a racing second replica's create fails and it reads the winner's). One found empty or
 * short is refused (Authentication.useSigningKey): it would let anyone forge a session.
 */
async function sharedSessionKey(client: KubeClient, namespace: string): Promise<Buffer> {
  const name = "stratus-apiserver-sessions";
  try {
    await client.create(SECRET, {
      metadata: { name, namespace },
      data: { key: randomBytes(32).toString("base64") },
    } as KubeObject);
  } catch (error) {
    if (!isAlreadyExists(error)) throw error;
  }
  const secret = await client.get<KubeObject & { data?: Record<string, string> }>(SECRET, name, namespace);
  return Buffer.from(secret.data?.key ?? "", "base64");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      help: { type: "boolean", short: "h" },
      listen: { type: "string", default: "127.0.0.1:8080" },
      kubeconfig: { type: "string" },
      "keys-namespace": { type: "string", default: "stratus-system" },
      "health-address": { type: "string", default: "127.0.0.1:8083" },
      "subresources-listen": { type: "string" },
      "tls-cert-file": { type: "string" },
      "tls-key-file": { type: "string" },
      "console-key-file": { type: "string" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const listen = hostPort(values.listen as string, "listen");
  const health = hostPort(values["health-address"] as string, "health-address");
  const logger = createLogger("stratus-apiserver");
  const metrics = new RuntimeMetrics();
  const client = new KubeClient(kubeConfigFrom(values.kubeconfig), {
    metrics,
    userAgent: "stratus-apiserver",
  });
  const informers = new InformerFactory(client, { logger, metrics, resyncPeriodMs: 300_000 });
  const api = new CloudStackApi({
    client,
    informers,
    keysNamespace: values["keys-namespace"] as string,
    logger,
  });
  try {
    api.authentication.useSigningKey(await sharedSessionKey(client, values["keys-namespace"] as string));
  } catch (error) {
    process.stderr.write(
      `stratus-apiserver: Secret ${values["keys-namespace"]}/stratus-apiserver-sessions: ${error instanceof Error ? error.message : error}; delete it and a replica makes a new one (every session ends)\n`,
    );
    process.exit(2);
  }
  const jobs = jobController(api, logger, metrics);
  const keyPairStatuses = keyPairStatusController(api, logger, metrics);
  const subresources = values["subresources-listen"]
    ? await startSubresources(client, logger, {
        listen: hostPort(values["subresources-listen"], "subresources-listen"),
        certFile: values["tls-cert-file"],
        keyFile: values["tls-key-file"],
        consoleKeyFile: values["console-key-file"],
      })
    : undefined;

  // Long URLs reach the API, so user data over CloudStack's 4 KiB GET limit gets its 431, not a bare 431 from Node.
  const server = createServer({ maxHeaderSize: 128 * 1024 }, async (request, response) => {
    const url = new URL(request.url ?? "/", "http://localhost");
    if (url.pathname !== "/client/api" && url.pathname !== "/client/api/") {
      response
        .writeHead(404, { "content-type": "text/plain" })
        .end("not found: the CloudStack API is /client/api\n");
      return;
    }
    let rendered: ReturnType<typeof render>;
    try {
      rendered = await api.handle({
        method: request.method ?? "GET",
        query: url.searchParams,
        form: await readForm(request),
        cookieHeader: request.headers.cookie,
        remoteAddress: request.socket.remoteAddress ?? "unknown",
        secure: reachedOverTls(request),
      });
    } catch (error) {
      const failure = error instanceof ApiError ? error : new ApiError(ERROR.INTERNAL, "internal error");
      rendered = render("errorresponse", errorBody(failure.code, failure.message), "json", failure.code);
    }
    const headers: Record<string, string | string[]> = { "content-type": rendered.contentType };
    if (rendered.cookies) headers["set-cookie"] = rendered.cookies;
    if (rendered.status !== 200) headers["x-description"] = encodeURIComponent(rendered.body.slice(0, 200));
    // A body refused half-read (too large) leaves the connection unusable for another request.
    if (!request.complete) headers.connection = "close";
    response.writeHead(rendered.status, headers).end(rendered.body);
  });
  let serving = false;
  const healthServer = new HealthServer({
    metrics,
    host: health.host,
    port: health.port,
    readiness: {
      "api-server": apiServerCheck(client),
      "client-api": () => (serving ? undefined : "/client/api is not served yet"),
      informers: () => {
        const unsynced = informers.unsynced();
        return unsynced.length > 0 ? `not synced yet: ${unsynced.join(", ")}` : undefined;
      },
    },
  });
  await healthServer.listen();
  informers.start();
  await informers.waitForSync();
  await new Promise<void>((resolve) => server.listen(listen.port, listen.host, resolve));
  serving = true;
  const address = server.address();
  logger.info(
    { listen: typeof address === "object" && address ? `${address.address}:${address.port}` : listen },
    "CloudStack API serving",
  );

  const shutdown = new AbortController();
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      shutdown.abort();
      setTimeout(() => process.exit(1), 10_000).unref();
    });
  }
  await Promise.all([jobs.run(shutdown.signal), keyPairStatuses.run(shutdown.signal)]);
  server.close();
  await subresources?.close();
  await healthServer.close();
  await informers.stop();
  await client.close();
  process.exit(0);
}

await main();

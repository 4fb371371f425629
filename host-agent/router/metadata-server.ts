#!/usr/bin/env node
// stratus-router-metadata: a router's metadata and user-data service, run by its host agent inside
// the router's network namespace. It answers each guest from the directory named after the
// guest's own address (`<root>/<ip>/latest/...`, written by the agent): the source address says
// who asks, so a guest reads only its own data. GET only, the layout's names only.
import { readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { isIPv4 } from "node:net";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { metadataPath } from "./metadata-files.ts";

const { values } = parseArgs({
  options: { root: { type: "string" }, listen: { type: "string" }, "pid-file": { type: "string" } },
});
const root = values.root;
const listen = values.listen;
if (!root || !listen || !isIPv4(listen)) throw new Error("--root and --listen=<IPv4> are required");

const server = createServer(async (request, response) => {
  const guest = request.socket.remoteAddress?.replace(/^::ffff:/, "") ?? "";
  const path = metadataPath(request.url ?? "");
  if (request.method !== "GET" || !path || !isIPv4(guest)) {
    response.writeHead(request.method === "GET" ? 404 : 405).end();
    return;
  }
  try {
    const body = await readFile(join(root, guest, path));
    response.writeHead(200, { "content-type": "text/plain" }).end(body);
  } catch {
    response.writeHead(404).end();
  }
});
server.headersTimeout = 5_000;
server.requestTimeout = 10_000;
// Any failure ends the process: the agent's next look finds no pid and starts it again.
server.on("error", (error) => {
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
});
server.listen(80, listen, () => {
  if (values["pid-file"]) writeFile(values["pid-file"], String(process.pid)).catch(() => process.exit(1));
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));

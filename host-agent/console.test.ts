// The console server as a process part: real TLS (openssl's certificate), a unix socket standing
// for QEMU's serial port, and a WebSocket client as the API component's relay.
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { CONSOLE_MAX_MESSAGE_BYTES, issueConsoleTicket } from "../runtime/console-ticket.ts";
import { ConsoleServer } from "./console.ts";
import { ensureConsoleCertificate } from "./console-certificate.ts";

const api = generateKeyPairSync("ed25519");
const vm = randomUUID();
let dir: string;
let serial: Server;
let guest: Socket | undefined;
let server: ConsoleServer;
let port: number;
let cert: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "stratus-console-"));
  const path = join(dir, `${vm}.sock`);
  serial = createServer((socket) => {
    guest = socket;
    socket.write("login: ");
    socket.on("data", (data) => socket.write(`echo:${data}`));
  });
  await new Promise<void>((resolve) => serial.listen(path, resolve));
  const tls = await ensureConsoleCertificate(dir, "h1");
  cert = tls.cert;
  server = new ConsoleServer({
    host: "127.0.0.1",
    port: 0,
    hostName: "h1",
    ticketKey: api.publicKey,
    tls,
    socketOf: (uid) => (uid === vm ? path : undefined),
    logger: pino({ level: "silent" }),
  });
  port = await server.listen();
});

afterAll(async () => {
  await server.close();
  serial.close();
  await rm(dir, { recursive: true, force: true });
});

function open(ticket: string, scheme = "wss"): WebSocket {
  return new WebSocket(`${scheme}://127.0.0.1:${port}/console/${vm}`, {
    headers: { authorization: `Bearer ${ticket}` },
    ca: cert,
    checkServerIdentity: (() => undefined) as unknown as WebSocket.ClientOptions["checkServerIdentity"],
  });
}

/** The HTTP status the upgrade was refused with, or "open". */
function outcome(ws: WebSocket): Promise<string> {
  return new Promise((resolve) => {
    ws.once("open", () => resolve("open"));
    ws.once("unexpected-response", (_, response) => resolve(String(response.statusCode)));
    ws.once("error", (error) => resolve(error.message));
  });
}

describe("console server", () => {
  it("relays the guest's serial port to the holder of a ticket for this host and VM, once", async () => {
    const ticket = issueConsoleTicket(api.privateKey, { host: "h1", vm });
    const ws = open(ticket);
    expect(await outcome(ws)).toBe("open");
    const received: string[] = [];
    ws.on("message", (data) => received.push(String(data)));
    ws.send("root\n");
    await expect.poll(() => received.join("")).toContain("echo:root");
    expect(received.join("")).toContain("login: ");
    ws.close();
    // The same ticket again: a replay.
    expect(await outcome(open(ticket))).toBe("401");
  });

  it("refuses tickets for another host, signed by another key, and no ticket", async () => {
    expect(await outcome(open(issueConsoleTicket(api.privateKey, { host: "h2", vm })))).toBe("401");
    const other = generateKeyPairSync("ed25519");
    expect(await outcome(open(issueConsoleTicket(other.privateKey, { host: "h1", vm })))).toBe("401");
    expect(await outcome(open(""))).toBe("401");
  });

  it("speaks only TLS", async () => {
    expect(await outcome(open(issueConsoleTicket(api.privateKey, { host: "h1", vm }), "ws"))).not.toBe(
      "open",
    );
  });

  it("closes a connection that sends a message over the limit, leaving the guest untouched", async () => {
    const ws = open(issueConsoleTicket(api.privateKey, { host: "h1", vm }));
    expect(await outcome(ws)).toBe("open");
    let written = 0;
    guest?.on("data", (data) => {
      written += data.length;
    });
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
    ws.send(Buffer.alloc(CONSOLE_MAX_MESSAGE_BYTES + 1, 0x61));
    expect(await closed).toBe(1009);
    expect(written).toBe(0);
  });
});

// The guests' serial consoles over WebSocket (TLS), for the API component's console relay: one
// connection is piped to the unix socket QEMU serves the VM's serial port on. Each connection
// presents a ticket the API component signed for this host and this VM (runtime/console-ticket.ts),
// taken once. Messages are small and the pipe keeps backpressure: a slow reader stops the guest's
// output from piling up in memory, and a flood from the client stops at the socket.
import type { KeyObject } from "node:crypto";
import { createServer, type Server } from "node:https";
import { connect } from "node:net";
import { pipeline } from "node:stream";
import type { Logger } from "pino";
import { createWebSocketStream, WebSocketServer } from "ws";
import { CONSOLE_MAX_MESSAGE_BYTES, checkConsoleTicket, TakenTickets } from "../runtime/console-ticket.ts";

export interface ConsoleServerOptions {
  host: string;
  port: number;
  hostName: string;
  /** The API component's console key (Ed25519, public half). */
  ticketKey: KeyObject;
  tls: { cert: string; key: string };
  /** The console socket of a VM placed on this host, or undefined. */
  socketOf: (vmUid: string) => string | undefined;
  logger: Logger;
}

export class ConsoleServer {
  private readonly server: Server;
  private readonly sockets = new WebSocketServer({ noServer: true, maxPayload: CONSOLE_MAX_MESSAGE_BYTES });
  private readonly taken = new TakenTickets();
  private readonly options: ConsoleServerOptions;

  constructor(options: ConsoleServerOptions) {
    this.options = options;
    this.server = createServer(options.tls, (_, response) => response.writeHead(426).end("WebSocket only\n"));
    this.server.on("upgrade", (request, socket, head) => {
      const refuse = (status: string) => socket.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\n\r\n`);
      const uid = /^\/console\/([0-9a-f-]{36})$/.exec(request.url ?? "")?.[1];
      const ticket = /^Bearer (\S+)$/.exec(request.headers.authorization ?? "")?.[1];
      if (!uid || !ticket) return refuse("401 Unauthorized");
      const check = checkConsoleTicket(options.ticketKey, ticket, { host: options.hostName, vm: uid });
      if (!check.ok) {
        options.logger.warn({ vm: uid, reason: check.reason }, "console ticket refused");
        return refuse("401 Unauthorized");
      }
      if (!this.taken.take(check.nonce, check.exp)) {
        options.logger.warn({ vm: uid }, "console ticket presented again");
        return refuse("401 Unauthorized");
      }
      const path = options.socketOf(uid);
      if (!path) return refuse("404 Not Found");
      this.sockets.handleUpgrade(request, socket, head, (ws) => {
        const serial = connect(path);
        const stream = createWebSocketStream(ws);
        // Either side ending ends both; an error (the guest gone, a message too large) is logged once.
        pipeline(serial, stream, serial, (error) => {
          if (error) options.logger.info({ vm: uid, err: error.message }, "console closed");
        });
        options.logger.info({ vm: uid }, "console attached");
      });
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(this.options.port, this.options.host, resolve));
    const address = this.server.address();
    return typeof address === "object" && address ? address.port : this.options.port;
  }

  async close(): Promise<void> {
    for (const client of this.sockets.clients) client.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

// The guests' serial consoles over WebSocket, for the API component's console relay: one
// connection is piped to the unix socket QEMU serves the VM's serial port on. Callers prove they
// are the API component with a shared bearer token (a Secret mounted in both).
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { connect } from "node:net";
import type { Logger } from "pino";
import { WebSocketServer } from "ws";

export interface ConsoleServerOptions {
  host: string;
  port: number;
  token: string;
  /** The console socket of a VM placed on this host, or undefined. */
  socketOf: (vmUid: string) => string | undefined;
  logger: Logger;
}

function bearerMatches(request: IncomingMessage, token: string): boolean {
  const given = Buffer.from(request.headers.authorization ?? "");
  const expected = Buffer.from(`Bearer ${token}`);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export class ConsoleServer {
  private readonly server: Server;
  private readonly sockets = new WebSocketServer({ noServer: true });
  private readonly options: ConsoleServerOptions;

  constructor(options: ConsoleServerOptions) {
    this.options = options;
    this.server = createServer((_, response) => response.writeHead(426).end("WebSocket only\n"));
    this.server.on("upgrade", (request, socket, head) => {
      const uid = /^\/console\/([0-9a-f-]{36})$/.exec(request.url ?? "")?.[1];
      const path = uid ? options.socketOf(uid) : undefined;
      if (!bearerMatches(request, options.token)) {
        socket.end("HTTP/1.1 401 Unauthorized\r\n\r\n");
        return;
      }
      if (!path) {
        socket.end("HTTP/1.1 404 Not Found\r\n\r\n");
        return;
      }
      this.sockets.handleUpgrade(request, socket, head, (ws) => {
        const serial = connect(path);
        serial.on("data", (chunk) => ws.send(chunk));
        serial.on("error", (error) => ws.close(1011, error.message.slice(0, 100)));
        serial.on("close", () => ws.close());
        ws.on("message", (data) => serial.write(data as Buffer));
        ws.on("close", () => serial.destroy());
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
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

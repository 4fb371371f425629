// Free TCP ports on loopback for the local control plane and cloud: each component gets a port
// the kernel hands out, so several clusters and test runs share one machine without clashing.
import { createServer } from "node:net";

/** A port the kernel just handed out on loopback; the small race before use is acceptable on one machine. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port")),
      );
    });
  });
}

/** `port` when nothing listens on it (the CloudStack API's usual 8080), any free port otherwise. */
export async function freePortPreferring(port: number): Promise<number> {
  const free = await new Promise<boolean>((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
  return free ? port : freePort();
}

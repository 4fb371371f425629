// The tiny guest's serial console, read and typed on directly through QEMU's unix socket.
import { connect } from "node:net";

/**
 * Types a line on the guest's serial console. The connection stays open a moment: QEMU drops what
 * it has not passed to the UART yet when the client hangs up.
 */
export function typeOnConsole(socket: string, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const connection = connect(socket, () => {
      connection.write(`${line}\n`);
      setTimeout(() => {
        connection.destroy();
        resolve();
      }, 2_000);
    });
    connection.on("error", reject);
  });
}

/** Reads the guest's serial console until `pattern` shows up. */
export function readConsoleUntil(socket: string, pattern: RegExp, timeoutMs = 90_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = "";
    const connection = connect(socket);
    const timer = setTimeout(() => {
      connection.destroy();
      reject(new Error(`console never showed ${pattern}; it showed:\n${output.slice(-2000)}`));
    }, timeoutMs);
    connection.on("data", (chunk) => {
      output += chunk.toString("latin1");
      const match = pattern.exec(output);
      if (match) {
        clearTimeout(timer);
        connection.destroy();
        resolve(match[0]);
      }
    });
    connection.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * Records everything the guest prints on a console socket that may not exist yet (a live
 * migration's target makes it when the incoming QEMU starts), until `stop` is called: what a
 * guest printed with nobody attached is lost, so a panic right after a move shows only here.
 */
export function recordConsole(socket: string): { stop: () => string } {
  let output = "";
  let stopped = false;
  let connection: ReturnType<typeof connect> | undefined;
  const attach = () => {
    if (stopped) return;
    connection = connect(socket);
    connection.on("data", (chunk) => {
      output += chunk.toString("latin1");
    });
    connection.on("error", () => {
      connection = undefined;
      setTimeout(attach, 100);
    });
  };
  attach();
  return {
    stop: () => {
      stopped = true;
      connection?.destroy();
      return output;
    },
  };
}

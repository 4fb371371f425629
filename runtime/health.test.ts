import { networkInterfaces } from "node:os";
import { afterEach, describe, expect, it } from "vitest";
import { HealthServer } from "./health.ts";
import { RuntimeMetrics } from "./metrics.ts";

describe("HealthServer", () => {
  let server: HealthServer | undefined;
  afterEach(async () => {
    await server?.close();
  });

  it("answers a debug page that fails with a 500 and keeps serving", async () => {
    server = new HealthServer({
      metrics: new RuntimeMetrics(),
      readiness: {},
      port: 0,
      debug: {
        "/debug/domains": async () => {
          throw new Error("the host agent is not running yet");
        },
      },
    });
    const port = await server.listen();
    const failed = await fetch(`http://127.0.0.1:${port}/debug/domains`);
    expect(failed.status).toBe(500);
    expect(await failed.text()).toBe("the host agent is not running yet\n");
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
  });

  it("answers debug pages only to a process on the host itself", async () => {
    const outside = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === "IPv4" && !a.internal)?.address;
    expect(outside, "this machine has a non-loopback IPv4 address").toBeDefined();
    server = new HealthServer({
      metrics: new RuntimeMetrics(),
      readiness: {},
      host: "0.0.0.0",
      port: 0,
      debug: { "/debug/domains": async () => ["stratus-guest"] },
    });
    const port = await server.listen();
    const remote = await fetch(`http://${outside}:${port}/debug/domains`);
    expect(remote.status).toBe(403);
    expect((await fetch(`http://${outside}:${port}/healthz`)).status).toBe(200);
    expect(await (await fetch(`http://127.0.0.1:${port}/debug/domains`)).json()).toEqual(["stratus-guest"]);
  });
});

// The client against a local HTTP server that answers as the API server does while a kind's
// schema is reloading: the retry must cover that window and nothing else.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import { ApiError, KubeClient } from "./client.ts";

const SCHEMA_RELOADING = {
  kind: "Status",
  apiVersion: "v1",
  status: "Failure",
  message:
    "Resource kind stratus.io/v1alpha1, Kind=VirtualMachine not found. There can be a delay between when CustomResourceDefinitions are created and when they are available.",
  reason: "ServiceUnavailable",
  code: 503,
};

let server: Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

/** Serves `answers` in order (the last one forever) and counts the requests. */
async function apiServer(answers: { status: number; body: string }[]) {
  const seen = { requests: 0 };
  server = createServer((_request, response) => {
    const answer = answers[Math.min(seen.requests, answers.length - 1)] as { status: number; body: string };
    seen.requests++;
    response.writeHead(answer.status, { "content-type": "application/json" }).end(answer.body);
  });
  await new Promise<void>((resolve) => server?.listen(0, "127.0.0.1", resolve));
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [
      {
        name: "c",
        server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        skipTLSVerify: true,
      },
    ],
    users: [{ name: "u" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return { client: new KubeClient(config), seen };
}

const request = (client: KubeClient) =>
  client.request("POST", "/apis/x", { verb: "create", resource: "x", body: {} });

describe("KubeClient.request", () => {
  it("retries the API server's 503 Status until the kind is served", async () => {
    const unavailable = { status: 503, body: JSON.stringify(SCHEMA_RELOADING) };
    const { client, seen } = await apiServer([
      unavailable,
      unavailable,
      { status: 201, body: '{"ok":true}' },
    ]);
    await expect(request(client)).resolves.toEqual({ ok: true });
    expect(seen.requests).toBe(3);
  });

  it("gives up after its retries with the API server's message", async () => {
    const { client, seen } = await apiServer([{ status: 503, body: JSON.stringify(SCHEMA_RELOADING) }]);
    const error = await request(client).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).message).toContain("There can be a delay");
    expect(seen.requests).toBe(6);
  }, 15_000);

  it("does not retry an aggregated API's plain 503 or any other refusal", async () => {
    for (const answer of [
      { status: 503, body: "service unavailable" },
      { status: 409, body: JSON.stringify({ kind: "Status", reason: "AlreadyExists", code: 409 }) },
    ]) {
      const { client, seen } = await apiServer([answer]);
      await expect(request(client)).rejects.toHaveProperty("status", answer.status);
      expect(seen.requests).toBe(1);
      await new Promise<void>((resolve) => server?.close(() => resolve()));
      server = undefined;
    }
  });
});

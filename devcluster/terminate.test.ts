import type { ChildProcess } from "node:child_process";
import { describe, expect, it } from "vitest";
import { terminate } from "./controlplane.ts";

describe("terminate", () => {
  it("never signals the pid of a child known to have exited: the pid may be another process's now", async () => {
    // The pid reused by this very test process: a SIGTERM would end the test run.
    const exited = { exitCode: 0, signalCode: null } as unknown as ChildProcess;
    await terminate(process.pid, exited, 100);
    expect(process.exitCode ?? 0).toBe(0);
  });
});

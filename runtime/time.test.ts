import { describe, expect, it } from "vitest";
import { pollUntil } from "./time.ts";

describe("pollUntil", () => {
  it("asks until the probe holds", async () => {
    let asked = 0;
    await pollUntil("the third answer", () => ++asked === 3, { timeoutMs: 5_000, intervalMs: 1 });
    expect(asked).toBe(3);
  });

  it("gives up after the timeout, naming what it waited for", async () => {
    await expect(
      pollUntil(
        () => "a miracle (0 seen)",
        () => false,
        { timeoutMs: 20, intervalMs: 5 },
      ),
    ).rejects.toThrow("gave up after 0.02 s waiting for a miracle (0 seen)");
    await expect(
      pollUntil("x", () => false, { timeoutMs: 1, intervalMs: 1, timeoutError: (m) => new RangeError(m) }),
    ).rejects.toBeInstanceOf(RangeError);
  });

  it("ends with the probe's own failure", async () => {
    await expect(
      pollUntil("x", () => Promise.reject(new Error("boom")), { timeoutMs: 1_000 }),
    ).rejects.toThrow("boom");
  });
});

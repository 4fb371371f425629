import { describe, expect, it } from "vitest";
import { LoginThrottle } from "./login-throttle.ts";

const LIMITS = { perUser: 3, perAddress: 5, windowMs: 60_000, maxTracked: 100 };
const T = 1_000_000;

describe("login throttling", () => {
  it("refuses a user after its failures, whatever address the guesses come from, until the window ends", () => {
    const throttle = new LoginThrottle(LIMITS);
    for (const address of ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) {
      expect(throttle.refusal("alice", address, T)).toBeUndefined();
      throttle.failed("alice", address, T);
    }
    expect(throttle.refusal("alice", "10.0.0.9", T + 1000)).toEqual({ by: "user", retryAfterMs: 59_000 });
    expect(throttle.refusal("bob", "10.0.0.9", T + 1000)).toBeUndefined();
    expect(throttle.refusal("alice", "10.0.0.9", T + 60_000)).toBeUndefined();
  });

  it("refuses an address guessing many users", () => {
    const throttle = new LoginThrottle(LIMITS);
    for (let i = 0; i < 5; i++) throttle.failed(`user-${i}`, "10.0.0.1", T);
    expect(throttle.refusal("someone-else", "10.0.0.1", T)).toMatchObject({ by: "address" });
    expect(throttle.refusal("someone-else", "10.0.0.2", T)).toBeUndefined();
  });

  it("forgets a user's failures on a good password, not the address's", () => {
    const throttle = new LoginThrottle(LIMITS);
    for (let i = 0; i < 2; i++) throttle.failed("alice", "10.0.0.1", T);
    throttle.succeeded("alice");
    throttle.failed("alice", "10.0.0.1", T);
    expect(throttle.refusal("alice", "10.0.0.2", T)).toBeUndefined();
    throttle.failed("x", "10.0.0.1", T);
    throttle.failed("y", "10.0.0.1", T);
    expect(throttle.refusal("z", "10.0.0.1", T)).toMatchObject({ by: "address" });
  });

  it("remembers a bounded number of users and addresses", () => {
    const throttle = new LoginThrottle(LIMITS);
    for (let i = 0; i < 1000; i++) throttle.failed(`user-${i}`, `10.0.${i >> 8}.${i & 255}`, T);
    expect(throttle.size).toBeLessThanOrEqual(100);
    // The latest are the ones kept.
    throttle.failed("user-999", "10.0.3.231", T);
    throttle.failed("user-999", "10.0.3.231", T);
    expect(throttle.refusal("user-999", "elsewhere", T)).toMatchObject({ by: "user" });
  });
});

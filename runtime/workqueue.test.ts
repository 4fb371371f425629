import { afterEach, describe, expect, it, vi } from "vitest";
import { ExponentialBackoff, WorkQueue } from "./workqueue.ts";

describe("WorkQueue", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("queues a key only once while it waits", async () => {
    const queue = new WorkQueue<string>();
    queue.add("a");
    queue.add("b");
    queue.add("a");
    expect(queue.len()).toBe(2);
    expect(await queue.get()).toBe("a");
    expect(await queue.get()).toBe("b");
    expect(queue.len()).toBe(0);
  });

  it("processes a key that changed during processing once more, afterwards and never in parallel", async () => {
    const queue = new WorkQueue<string>();
    queue.add("a");
    const first = await queue.get();
    queue.add("a");
    queue.add("a");
    expect(queue.len()).toBe(0); // not handed to a second worker while the first holds it
    queue.done(first as string);
    expect(queue.len()).toBe(1);
    expect(await queue.get()).toBe("a");
    queue.done("a");
    expect(queue.len()).toBe(0);
  });

  it("wakes a waiting worker when a key arrives", async () => {
    const queue = new WorkQueue<string>();
    const next = queue.get();
    queue.add("x");
    expect(await next).toBe("x");
  });

  it("backs off exponentially per key up to the cap, and forget starts over", () => {
    const backoff = new ExponentialBackoff<string>({ baseDelayMs: 10, maxDelayMs: 100 });
    expect([1, 2, 3, 4, 5, 6].map(() => backoff.next("a"))).toEqual([10, 20, 40, 80, 100, 100]);
    expect(backoff.next("b")).toBe(10);
    backoff.forget("a");
    expect(backoff.next("a")).toBe(10);
  });

  it("re-adds a failed key after its backoff delay, longer on every failure", async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue<string>({ baseDelayMs: 100, maxDelayMs: 10_000 });
    queue.addRateLimited("a");
    queue.addRateLimited("a"); // a second failure before the first retry: the earlier time wins
    expect(queue.numRequeues("a")).toBe(2);
    vi.advanceTimersByTime(99);
    expect(queue.len()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(queue.len()).toBe(1);
    await queue.get();
    queue.done("a");
    queue.addRateLimited("a"); // third failure: 100 * 2^2
    vi.advanceTimersByTime(399);
    expect(queue.len()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(queue.len()).toBe(1);
    queue.forget("a");
    expect(queue.numRequeues("a")).toBe(0);
  });

  it("addAfter keeps the earliest time and adds at once for no delay", () => {
    vi.useFakeTimers();
    const queue = new WorkQueue<string>();
    queue.addAfter("a", 1000);
    queue.addAfter("a", 200);
    queue.addAfter("a", 5000);
    vi.advanceTimersByTime(200);
    expect(queue.len()).toBe(1);
    queue.addAfter("b", 0);
    expect(queue.len()).toBe(2);
  });

  it("drains on shutdown: queued keys are still handed out, then workers get undefined", async () => {
    const queue = new WorkQueue<string>();
    queue.add("a");
    queue.add("b");
    const taken = (await queue.get()) as string;
    let drained = false;
    const shutdown = queue.shutDown().then(() => {
      drained = true;
    });
    queue.add("c"); // refused once shutting down
    expect(await queue.get()).toBe("b");
    queue.done("b");
    await Promise.resolve();
    expect(drained).toBe(false); // "a" is still being processed
    queue.done(taken);
    await shutdown;
    expect(drained).toBe(true);
    expect(await queue.get()).toBeUndefined();
  });

  it("releases idle workers on shutdown", async () => {
    const queue = new WorkQueue<string>();
    const idle = queue.get();
    await queue.shutDown();
    expect(await idle).toBeUndefined();
  });

  it("reports depth, adds, waits and retries", async () => {
    const seen = { depth: [] as number[], added: 0, waited: 0, retried: 0 };
    const queue = new WorkQueue<string>(undefined, {
      depth: (d) => seen.depth.push(d),
      added: () => seen.added++,
      waited: () => seen.waited++,
      retried: () => seen.retried++,
    });
    queue.add("a");
    queue.add("b");
    await queue.get();
    queue.addRateLimited("z");
    expect(seen).toMatchObject({ added: 2, waited: 1, retried: 1 });
    expect(seen.depth).toEqual([1, 2, 1]);
  });
});

import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { KubeObject } from "./client.ts";
import { Controller } from "./controller.ts";
import type { Informer, InformerHandlers } from "./informer.ts";

/** The two things Controller.watch uses of an informer: its list and its handlers. */
function fakeInformer(objects: KubeObject[]) {
  const handlers: InformerHandlers<KubeObject>[] = [];
  const informer = {
    list: () => objects,
    addHandlers: (h: InformerHandlers<KubeObject>) => handlers.push(h),
  } as unknown as Informer<KubeObject>;
  const update = (object: KubeObject, previous = object) => {
    for (const h of handlers) h.onUpdate?.(previous, object);
  };
  return { informer, update };
}

const vm = (name: string): KubeObject => ({ metadata: { name, namespace: "a" } });

describe("Controller.watch", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("enqueues at once by default", () => {
    const { informer, update } = fakeInformer([]);
    const controller = new Controller({
      name: "t",
      logger: pino({ level: "silent" }),
      reconcile: async () => undefined,
    });
    controller.watch(informer, () => ["host-1"]);
    update(vm("v1"));
    expect(controller.queue.len()).toBe(1);
  });

  it("with delayMs, coalesces a burst of changes into one key after the delay", () => {
    vi.useFakeTimers();
    const { informer, update } = fakeInformer([]);
    const controller = new Controller({
      name: "t",
      logger: pino({ level: "silent" }),
      reconcile: async () => undefined,
    });
    controller.watch(informer, () => ["host-1"], { delayMs: 2000 });
    for (let i = 0; i < 50; i++) update(vm(`v${i}`));
    expect(controller.queue.len()).toBe(0);
    vi.advanceTimersByTime(1999);
    expect(controller.queue.len()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(controller.queue.len()).toBe(1);
    // A change after the delayed add starts a new delay: still one reconcile per burst.
    update(vm("v51"));
    vi.advanceTimersByTime(2000);
    expect(controller.queue.len()).toBe(1);
  });

  it("with specChangesOnly, a status-only update enqueues nothing and a spec change does", () => {
    const { informer, update } = fakeInformer([]);
    const controller = new Controller({
      name: "t",
      logger: pino({ level: "silent" }),
      reconcile: async () => undefined,
    });
    controller.watch(informer, (o) => [o.metadata.name as string], { specChangesOnly: true });
    const pool = { metadata: { name: "p1", generation: 3 } };
    update({ ...pool, metadata: { ...pool.metadata, resourceVersion: "9" } }, pool);
    expect(controller.queue.len()).toBe(0);
    update({ metadata: { name: "p1", generation: 4 } }, pool);
    expect(controller.queue.len()).toBe(1);
  });
});

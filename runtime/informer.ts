// An informer: a local cache of one resource kept current by list + watch. Unlike client-node's,
// it never gives up: any error restarts the watch after a jittered backoff, a 410 Gone (history
// compacted) relists, a watch that goes silent is restarted by a watchdog, and a periodic resync
// hands every key to the handlers again. Cached objects are frozen: nobody can mutate the cache.
import type { Logger } from "pino";
import {
  apiVersionOf,
  type KubeClient,
  type KubeObject,
  objectKey,
  type ResourceType,
  type WatchEvent,
} from "./client.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { sleep } from "./time.ts";

export interface InformerHandlers<T> {
  onAdd?(object: T): void;
  onUpdate?(previous: T, object: T): void;
  onDelete?(object: T): void;
  /** Periodic resync: every cached object, so level-triggered controllers look again. */
  onResync?(object: T): void;
}

export type IndexFunction<T> = (object: T) => string[];

export interface InformerOptions<T> {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Re-deliver every object this often (0: never). */
  resyncPeriodMs?: number;
  /** Restart a watch that delivered nothing, not even a bookmark, for this long. */
  stallTimeoutMs?: number;
  /** Bounds of the server-side watch timeout; a random value in between spreads reconnects. */
  watchTimeoutSeconds?: [number, number];
  /** Backoff between failed attempts: base, cap (jittered). */
  backoffMs?: [number, number];
  indexers?: Record<string, IndexFunction<T>>;
  logger?: Logger;
  metrics?: RuntimeMetrics;
}

class GoneError extends Error {}
class StalledError extends Error {}

/** Deep-freezes an object so handlers and reconcilers cannot change the cache by accident. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

export class Informer<T extends KubeObject> {
  readonly type: ResourceType;
  private readonly client: KubeClient;
  private readonly options: InformerOptions<T>;
  private readonly store = new Map<string, T>();
  private readonly indices = new Map<string, Map<string, Set<string>>>();
  private readonly handlers: InformerHandlers<T>[] = [];
  private readonly syncWaiters: (() => void)[] = [];
  private resourceVersion = "";
  private synced = false;
  private running: Promise<void> | undefined;
  private abort: AbortController | undefined;
  /** Counters tests and health checks read. */
  readonly stats = { lists: 0, watches: 0, gone: 0, stalls: 0, errors: 0 };
  lastError: unknown;

  constructor(client: KubeClient, type: ResourceType, options: InformerOptions<T> = {}) {
    this.client = client;
    this.type = type;
    this.options = options;
    for (const name of Object.keys(options.indexers ?? {})) this.indices.set(name, new Map());
  }

  /** Adds indexes; only before start(), when the cache is still empty. */
  addIndexers(indexers: Record<string, IndexFunction<T>>): void {
    if (this.running) throw new Error(`${this.type.plural} informer: add indexes before it starts`);
    this.options.indexers = { ...this.options.indexers, ...indexers };
    for (const name of Object.keys(indexers)) this.indices.set(name, new Map());
  }

  addHandlers(handlers: InformerHandlers<T>): void {
    this.handlers.push(handlers);
    // A handler added late still sees everything already cached.
    if (this.synced) for (const object of this.store.values()) handlers.onAdd?.(object);
  }

  start(): void {
    if (this.running) return;
    this.abort = new AbortController();
    this.running = this.run(this.abort.signal);
  }

  async stop(): Promise<void> {
    this.abort?.abort();
    await this.running;
    this.running = undefined;
  }

  hasSynced(): boolean {
    return this.synced;
  }

  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  get(key: string): T | undefined {
    return this.store.get(key);
  }

  list(): T[] {
    return [...this.store.values()];
  }

  keys(): string[] {
    return [...this.store.keys()];
  }

  /** Objects whose index function returned `value`, e.g. byIndex("host", "h1"). */
  byIndex(index: string, value: string): T[] {
    const keys = this.indices.get(index)?.get(value);
    if (!this.indices.has(index)) throw new Error(`${this.type.plural} informer has no index "${index}"`);
    return [...(keys ?? [])].map((key) => this.store.get(key) as T);
  }

  private async run(signal: AbortSignal): Promise<void> {
    const [baseDelay, maxDelay] = this.options.backoffMs ?? [200, 30_000];
    let failures = 0;
    let needList = true;
    const resync = this.startResync(signal);
    try {
      while (!signal.aborted) {
        try {
          if (needList) {
            await this.listAndReplace(signal);
            needList = false;
          }
          await this.watchOnce(signal);
          failures = 0;
          this.restarted("closed");
        } catch (error) {
          if (signal.aborted) break;
          if (error instanceof GoneError) {
            // The server no longer has our resourceVersion: only a fresh list is trustworthy.
            this.stats.gone++;
            this.restarted("gone");
            needList = true;
            continue;
          }
          if (error instanceof StalledError) {
            this.stats.stalls++;
            this.restarted("stalled");
            this.options.logger?.warn({ resource: this.type.plural }, "watch went silent; restarting it");
            continue;
          }
          this.stats.errors++;
          this.lastError = error;
          this.restarted("error");
          const delay = jitter(Math.min(baseDelay * 2 ** failures, maxDelay));
          failures++;
          this.options.logger?.warn(
            { resource: this.type.plural, err: String(error), retryInMs: Math.round(delay) },
            "list/watch failed; retrying",
          );
          // As client-go: resume watching from the last resourceVersion; only 410 Gone forces a
          // relist (a list first would hide that the history was compacted, and cost more).
          await sleep(delay, signal);
        }
      }
    } finally {
      clearInterval(resync);
    }
  }

  private restarted(reason: string): void {
    this.options.metrics?.informerRestarts.inc({ resource: this.type.plural, reason });
  }

  private startResync(signal: AbortSignal): NodeJS.Timeout | undefined {
    const period = this.options.resyncPeriodMs ?? 0;
    if (period <= 0) return undefined;
    const timer = setInterval(() => {
      if (signal.aborted || !this.synced) return;
      for (const object of this.store.values()) for (const h of this.handlers) h.onResync?.(object);
    }, period);
    timer.unref();
    return timer;
  }

  private async listAndReplace(signal: AbortSignal): Promise<void> {
    this.stats.lists++;
    this.options.metrics?.informerRelists.inc({ resource: this.type.plural });
    const list = await this.client.listAll<T>(this.type, {
      namespace: this.options.namespace,
      labelSelector: this.options.labelSelector,
      fieldSelector: this.options.fieldSelector,
      signal,
    });
    const seen = new Set<string>();
    for (const object of list.items) {
      // Lists omit apiVersion/kind on items; fill them so cached objects are complete.
      object.apiVersion ??= apiVersionOf(this.type);
      object.kind ??= this.type.kind;
      seen.add(objectKey(object));
      this.upsert(object);
    }
    // Whatever was deleted while we were not watching is deleted now.
    for (const [key, object] of [...this.store]) {
      if (!seen.has(key)) this.remove(key, object);
    }
    this.resourceVersion = list.metadata.resourceVersion;
    if (!this.synced) {
      this.synced = true;
      for (const resolve of this.syncWaiters.splice(0)) resolve();
    }
  }

  private async watchOnce(signal: AbortSignal): Promise<void> {
    this.stats.watches++;
    const [minTimeout, maxTimeout] = this.options.watchTimeoutSeconds ?? [300, 600];
    const stallTimeoutMs = this.options.stallTimeoutMs ?? 150_000;
    // Aborted by the watchdog or by a gone event; the watch also ends when the informer stops
    // (AbortSignal.any also covers a stop that happened before this point).
    const watchAbort = new AbortController();
    const watchSignal = AbortSignal.any([signal, watchAbort.signal]);
    let stalled = false;
    let lastActivity = Date.now();
    const watchdog = setInterval(
      () => {
        if (Date.now() - lastActivity > stallTimeoutMs) {
          stalled = true;
          watchAbort.abort();
        }
      },
      Math.min(1000, stallTimeoutMs / 4),
    );
    watchdog.unref();
    let gone = false;
    try {
      await this.client.watch<T>(
        this.type,
        {
          namespace: this.options.namespace,
          labelSelector: this.options.labelSelector,
          fieldSelector: this.options.fieldSelector,
          resourceVersion: this.resourceVersion,
          timeoutSeconds: Math.round(minTimeout + Math.random() * (maxTimeout - minTimeout)),
          signal: watchSignal,
        },
        (event) => {
          lastActivity = Date.now();
          this.options.metrics?.informerEvents.inc({ resource: this.type.plural, type: event.type });
          if (this.apply(event) === "gone") {
            gone = true;
            watchAbort.abort();
          }
        },
      );
    } catch (error) {
      if (!(stalled || gone || signal.aborted)) throw error;
    } finally {
      clearInterval(watchdog);
    }
    if (gone) throw new GoneError();
    if (stalled && !signal.aborted) throw new StalledError();
  }

  private apply(event: WatchEvent<T>): "gone" | undefined {
    const object = event.object;
    switch (event.type) {
      case "ADDED":
      case "MODIFIED":
        this.upsert(object);
        break;
      case "DELETED": {
        const key = objectKey(object);
        this.remove(key, deepFreeze(object));
        break;
      }
      case "BOOKMARK":
        break;
      case "ERROR": {
        const status = object as unknown as { code?: number; message?: string };
        if (status.code === 410) return "gone";
        throw new Error(`watch error ${status.code}: ${status.message}`);
      }
    }
    if (object.metadata?.resourceVersion) this.resourceVersion = object.metadata.resourceVersion;
    return undefined;
  }

  private upsert(object: T): void {
    const key = objectKey(object);
    const previous = this.store.get(key);
    if (previous && previous.metadata.resourceVersion === object.metadata.resourceVersion) return;
    const frozen = deepFreeze(object);
    this.store.set(key, frozen);
    this.reindex(key, previous, frozen);
    for (const h of this.handlers) {
      if (previous) h.onUpdate?.(previous, frozen);
      else h.onAdd?.(frozen);
    }
  }

  private remove(key: string, object: T): void {
    const previous = this.store.get(key);
    if (!previous) return;
    this.store.delete(key);
    this.reindex(key, previous, undefined);
    for (const h of this.handlers) h.onDelete?.(object);
  }

  private reindex(key: string, previous: T | undefined, current: T | undefined): void {
    for (const [name, indexFunction] of Object.entries(this.options.indexers ?? {})) {
      const index = this.indices.get(name) as Map<string, Set<string>>;
      for (const value of previous ? indexFunction(previous) : []) {
        const keys = index.get(value);
        keys?.delete(key);
        if (keys?.size === 0) index.delete(value);
      }
      for (const value of current ? indexFunction(current) : []) {
        const keys = index.get(value) ?? new Set<string>();
        keys.add(key);
        index.set(value, keys);
      }
    }
  }
}

/** A delay between 50% and 100% of `ms`, so restarting clients do not all return at once. */
function jitter(ms: number): number {
  return ms * (0.5 + Math.random() * 0.5);
}

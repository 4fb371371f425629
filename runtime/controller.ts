// A controller: informers feed keys into a work queue; workers take keys and call one reconcile
// function, which reads the cache and converges the world. An error retries the key with backoff,
// a TerminalError is logged and not retried, and requeueAfterMs schedules a time-based check.
import type { Logger } from "pino";
import { type KubeObject, objectKey } from "./client.ts";
import type { Informer } from "./informer.ts";
import type { RuntimeMetrics } from "./metrics.ts";
import { type BackoffOptions, WorkQueue } from "./workqueue.ts";

export interface ReconcileResult {
  /** Look at the key again after this long (for time-based waits only, not for polling). */
  requeueAfterMs?: number;
}

export type Reconcile = (key: string, log: Logger) => Promise<ReconcileResult | undefined>;

/** A failure retrying cannot fix (e.g. invalid input); report it as a condition and stop. */
export class TerminalError extends Error {
  override name = "TerminalError";
}

export interface ControllerOptions {
  name: string;
  reconcile: Reconcile;
  logger: Logger;
  metrics?: RuntimeMetrics;
  workers?: number;
  backoff?: BackoffOptions;
}

export interface WatchOptions {
  /** Enqueue keys this long after a change instead of at once (coalescing bursts). */
  delayMs?: number;
  /**
   * Only additions, deletions and changes of the spec (metadata.generation) count, as
   * controller-runtime's GenerationChangedPredicate: for objects whose status churns.
   */
  specChangesOnly?: boolean;
}

export class Controller {
  readonly name: string;
  /** Replaced on every run: a queue that was shut down accepts nothing. */
  queue: WorkQueue<string>;
  private readonly options: ControllerOptions;
  private readonly log: Logger;
  private readonly sources: (() => string[])[] = [];

  constructor(options: ControllerOptions) {
    this.name = options.name;
    this.options = options;
    this.log = options.logger.child({ controller: options.name });
    this.queue = this.newQueue();
  }

  private newQueue(): WorkQueue<string> {
    return new WorkQueue(this.options.backoff, this.options.metrics?.queueObserver(this.options.name));
  }

  /**
   * Enqueues keys for changes of an informer's objects. `keysOf` maps an object to the keys of
   * this controller it affects (by default its own key); deletions pass the last known object.
   * With `delayMs`, a key is enqueued that long after the first change: a burst of changes
   * (roll-ups over many VMs) coalesces into one reconcile and one write.
   */
  watch<T extends KubeObject>(
    informer: Informer<T>,
    keysOf: (object: T) => string[] = (o) => [objectKey(o)],
    options: WatchOptions = {},
  ): this {
    const { delayMs, specChangesOnly } = options;
    const enqueue = (object: T) => {
      for (const key of keysOf(object))
        if (delayMs === undefined) this.queue.add(key);
        else this.queue.addAfter(key, delayMs);
    };
    this.sources.push(() => informer.list().flatMap(keysOf));
    informer.addHandlers({
      onAdd: enqueue,
      onUpdate: (previous, object) => {
        if (specChangesOnly && previous.metadata.generation === object.metadata.generation) return;
        // An object can move between keys (e.g. a host changing zone): both need a look.
        enqueue(previous);
        enqueue(object);
      },
      onDelete: enqueue,
      onResync: enqueue,
    });
    return this;
  }

  /**
   * Runs the workers until `signal` aborts, then lets them finish what is queued and returns.
   * Every cached object is looked at first: nothing seen before this run (or missed) is lost.
   */
  async run(signal: AbortSignal, workerCount?: number): Promise<void> {
    if (this.queue.isShuttingDown()) this.queue = this.newQueue();
    for (const keys of this.sources) for (const key of keys()) this.queue.add(key);
    const workers = Array.from({ length: workerCount ?? this.options.workers ?? 2 }, () => this.work());
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await this.queue.shutDown();
    await Promise.all(workers);
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      await this.reconcileKey(key);
      this.queue.done(key);
    }
  }

  private async reconcileKey(key: string): Promise<void> {
    const log = this.log.child({ key });
    const labels = { controller: this.name };
    const started = performance.now();
    try {
      const result = await this.options.reconcile(key, log);
      this.queue.forget(key);
      if (result?.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
    } catch (error) {
      this.options.metrics?.reconcileErrors.inc(labels);
      if (error instanceof TerminalError) {
        this.queue.forget(key);
        log.error({ err: error.message }, "reconcile failed; not retrying");
      } else {
        log.warn(
          {
            err: error instanceof Error ? error.message : String(error),
            retries: this.queue.numRequeues(key),
          },
          "reconcile failed; retrying with backoff",
        );
        if (!this.queue.isShuttingDown()) this.queue.addRateLimited(key);
      }
    } finally {
      this.options.metrics?.reconcileDuration.observe(labels, (performance.now() - started) / 1000);
    }
  }
}

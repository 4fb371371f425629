// A work queue with client-go's semantics: a key is queued at most once; a key that changes while
// it is being processed is processed again afterwards (never concurrently); failures back off
// exponentially per key, up to a cap; shutDown() lets the workers drain what is queued.
export interface BackoffOptions {
  /** Delay after the first failure. */
  baseDelayMs: number;
  /** Longest delay, however many failures. */
  maxDelayMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseDelayMs: 5, maxDelayMs: 1000_000 };

export interface QueueObserver {
  depth(depth: number): void;
  added(): void;
  /** Time from the moment a key became ready until a worker took it. */
  waited(seconds: number): void;
  retried(): void;
}

const NO_OBSERVER: QueueObserver = { depth() {}, added() {}, waited() {}, retried() {} };

/** Per-key exponential backoff: base * 2^failures, capped. */
export class ExponentialBackoff<K> {
  private readonly failures = new Map<K, number>();
  private readonly options: BackoffOptions;

  constructor(options: BackoffOptions = DEFAULT_BACKOFF) {
    this.options = options;
  }

  /** Records one more failure of `key` and returns how long to wait before retrying it. */
  next(key: K): number {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    return Math.min(this.options.baseDelayMs * 2 ** failures, this.options.maxDelayMs);
  }

  forget(key: K): void {
    this.failures.delete(key);
  }

  failuresOf(key: K): number {
    return this.failures.get(key) ?? 0;
  }
}

export class WorkQueue<K = string> {
  private readonly queue: K[] = [];
  /** Keys that need processing: queued, or changed while processing. */
  private readonly dirty = new Set<K>();
  private readonly processing = new Set<K>();
  private readonly readySince = new Map<K, number>();
  private readonly delayed = new Map<K, { at: number; timer: NodeJS.Timeout }>();
  private readonly waiters: ((key: K | undefined) => void)[] = [];
  private readonly backoff: ExponentialBackoff<K>;
  private shuttingDown = false;
  private drained: (() => void) | undefined;
  private readonly observer: QueueObserver;

  constructor(backoff: BackoffOptions = DEFAULT_BACKOFF, observer: QueueObserver = NO_OBSERVER) {
    this.backoff = new ExponentialBackoff(backoff);
    this.observer = observer;
  }

  add(key: K): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.observer.added();
    this.dirty.add(key);
    this.readySince.set(key, performance.now());
    if (this.processing.has(key)) return; // queued again by done()
    this.push(key);
  }

  /** Adds the key once `delayMs` has passed; an earlier pending addAfter of the same key wins. */
  addAfter(key: K, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + delayMs;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.delayed.set(key, { at, timer });
  }

  /** Adds the key after its backoff delay, which doubles with every call until forget(). */
  addRateLimited(key: K): void {
    this.observer.retried();
    this.addAfter(key, this.backoff.next(key));
  }

  /** The key succeeded: its backoff starts from the beginning next time. */
  forget(key: K): void {
    this.backoff.forget(key);
  }

  numRequeues(key: K): number {
    return this.backoff.failuresOf(key);
  }

  /** The next key to process, or undefined once the queue is shut down and empty. */
  get(): Promise<K | undefined> {
    const key = this.queue.shift();
    if (key !== undefined) return Promise.resolve(this.take(key));
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Marks the key processed; if it changed meanwhile, it is queued again. */
  done(key: K): void {
    this.processing.delete(key);
    if (this.dirty.has(key)) this.push(key);
    this.checkDrained();
  }

  len(): number {
    return this.queue.length;
  }

  isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /**
   * Stops accepting keys. Workers still get what is queued; the promise resolves when every key
   * taken has been marked done. Delayed keys are dropped: the next start lists everything again.
   */
  shutDown(): Promise<void> {
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    if (this.queue.length === 0) for (const waiter of this.waiters.splice(0)) waiter(undefined);
    return new Promise((resolve) => {
      this.drained = resolve;
      this.checkDrained();
    });
  }

  private push(key: K): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(this.take(key));
    else {
      this.queue.push(key);
      this.observer.depth(this.queue.length);
    }
  }

  private take(key: K): K {
    this.processing.add(key);
    this.dirty.delete(key);
    const since = this.readySince.get(key);
    this.readySince.delete(key);
    if (since !== undefined) this.observer.waited((performance.now() - since) / 1000);
    this.observer.depth(this.queue.length);
    return key;
  }

  private checkDrained(): void {
    if (!this.shuttingDown || !this.drained) return;
    if (this.queue.length === 0 && this.processing.size === 0) {
      for (const waiter of this.waiters.splice(0)) waiter(undefined);
      this.drained();
      this.drained = undefined;
    }
  }
}

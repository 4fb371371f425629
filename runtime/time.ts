// Kubernetes timestamps: Time is RFC 3339 in seconds, MicroTime has exactly six fractional digits.
export function kubeTime(date: Date = new Date()): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function kubeMicroTime(date: Date = new Date()): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** Waits `ms`, or less if `signal` aborts first (it never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Asks `probe` every `intervalMs` until it answers true; throws `timeoutError()` (by default an
 * Error naming `what`) once `timeoutMs` has passed. A probe that throws ends the wait with it.
 */
export async function pollUntil(
  what: string | (() => string),
  probe: () => Promise<boolean> | boolean,
  options: { timeoutMs: number; intervalMs?: number; timeoutError?: (message: string) => Error },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) {
      const message = `gave up after ${options.timeoutMs / 1000} s waiting for ${typeof what === "string" ? what : what()}`;
      throw options.timeoutError ? options.timeoutError(message) : new Error(message);
    }
    await sleep(options.intervalMs ?? 250);
  }
}

// Pure: failed logins counted per user and per source address, so guessing a password is slow
// whichever way the guesses are spread. The counts live in each replica's memory: with R
// replicas behind one Service a guesser gets at most R times the budget, still bounded, and a
// failed login costs no write to the API server.

export interface LoginLimits {
  /** Failures of one user within a window before its logins are refused (CloudStack: 5). */
  perUser: number;
  /** Failures from one address within a window, over all users it tries. */
  perAddress: number;
  windowMs: number;
  /** Users and addresses remembered at once; past it the longest quiet are forgotten. */
  maxTracked: number;
}

export const LOGIN_LIMITS: LoginLimits = {
  perUser: 5,
  perAddress: 20,
  windowMs: 5 * 60_000,
  maxTracked: 10_000,
};

interface Window {
  failures: number;
  startedAt: number;
}

export interface Refusal {
  /** What is throttled: the user or the address. */
  by: "user" | "address";
  retryAfterMs: number;
}

export class LoginThrottle {
  private readonly windows = new Map<string, Window>();
  private readonly limits: LoginLimits;

  constructor(limits: LoginLimits = LOGIN_LIMITS) {
    this.limits = limits;
  }

  /** Whether a login of `user` from `address` is refused now, before its password is looked at. */
  refusal(user: string, address: string, now: number): Refusal | undefined {
    for (const [by, key, limit] of this.keys(user, address)) {
      const window = this.current(key, now);
      if (window && window.failures >= limit)
        return { by, retryAfterMs: window.startedAt + this.limits.windowMs - now };
    }
    return undefined;
  }

  failed(user: string, address: string, now: number): void {
    for (const [, key] of this.keys(user, address)) {
      const window = this.current(key, now) ?? { failures: 0, startedAt: now };
      window.failures++;
      this.windows.delete(key); // re-inserted last: the map's order is from longest quiet to latest
      this.windows.set(key, window);
    }
    this.forgetPastLimit(now);
  }

  /** A good password clears the user's failures; the address's stay (it may be guessing others). */
  succeeded(user: string): void {
    this.windows.delete(`user:${user}`);
  }

  /** How many users and addresses are remembered (for tests of the bound). */
  get size(): number {
    return this.windows.size;
  }

  private keys(user: string, address: string): ["user" | "address", string, number][] {
    return [
      ["user", `user:${user}`, this.limits.perUser],
      ["address", `address:${address}`, this.limits.perAddress],
    ];
  }

  private current(key: string, now: number): Window | undefined {
    const window = this.windows.get(key);
    return window && now - window.startedAt < this.limits.windowMs ? window : undefined;
  }

  private forgetPastLimit(now: number): void {
    if (this.windows.size <= this.limits.maxTracked) return;
    for (const [key, window] of this.windows)
      if (now - window.startedAt >= this.limits.windowMs) this.windows.delete(key);
    for (const key of this.windows.keys()) {
      if (this.windows.size <= this.limits.maxTracked) break;
      this.windows.delete(key);
    }
  }
}

// Allocation by create: a resource (an address, a VLAN) is held by an object whose name is the
// resource, so etcd refuses a second create and two allocators (workers, replicas, a stale leader)
// can never hand out the same one. The create's response proves the allocation.
import { isAlreadyExists } from "../../runtime/client.ts";

/**
 * Creates the object of the first candidate that is free and returns that candidate, or undefined
 * when none is. `claimed` holds what this process created (or found taken) that its cache may not
 * show yet, keyed by object key; `taken` says what the cache shows held. Claims are made
 * synchronously (no await between looking and claiming), so workers never collide.
 */
export async function claimFirstFree<T, C>(options: {
  candidates: Iterable<T>;
  key: (candidate: T) => string;
  taken: (candidate: T) => boolean;
  claimed: Map<string, C>;
  /** What to remember for a candidate this process creates, and for one found held by another. */
  mine: (candidate: T) => C;
  others: (candidate: T) => C;
  create: (candidate: T) => Promise<unknown>;
}): Promise<T | undefined> {
  const { claimed } = options;
  for (const candidate of options.candidates) {
    const key = options.key(candidate);
    if (options.taken(candidate)) {
      claimed.delete(key); // the cache shows it now: no need to remember the claim
      continue;
    }
    if (claimed.has(key)) continue;
    claimed.set(key, options.mine(candidate));
    try {
      await options.create(candidate);
      return candidate;
    } catch (error) {
      if (!isAlreadyExists(error)) {
        claimed.delete(key);
        throw error;
      }
      // Someone else holds it (our cache had not shown it yet): remember that, try the next one.
      claimed.set(key, options.others(candidate));
    }
  }
  return undefined;
}

// Whether a caller may do something, as Kubernetes RBAC says (SubjectAccessReviews), with the
// reviews bounded: each decision is cached per identity for a short time (concurrent asks share
// one review), the cache holds a bounded number, and a list across accounts asks once for the
// whole cluster before asking namespace by namespace, a few at a time.
import type { AccessRequest } from "../runtime/authorization.ts";

export type Review = (request: AccessRequest) => Promise<boolean>;

export interface Identity {
  user: string;
  groups: readonly string[];
}

export interface ReviewedType {
  group: string;
  plural: string;
  subresource?: string;
}

/** How long a decision stands: a revoked RoleBinding takes effect here within this. */
export const DECISION_TTL_MS = 10_000;
/** Decisions remembered at once; past it the oldest go. */
export const MAX_DECISIONS = 10_000;
/** Reviews one request has in flight at once. */
export const REVIEWS_IN_FLIGHT = 4;

export class AccessReviews {
  private readonly decisions = new Map<string, { allowed: Promise<boolean>; at: number }>();
  private readonly review: Review;
  private readonly now: () => number;

  constructor(review: Review, now: () => number = Date.now) {
    this.review = review;
    this.now = now;
  }

  /** Whether `identity` may `verb` the type in `namespace`, or in every namespace when none is given. */
  can(identity: Identity, verb: string, type: ReviewedType, namespace?: string): Promise<boolean> {
    const key = JSON.stringify([
      identity.user,
      identity.groups,
      verb,
      type.group,
      type.plural,
      type.subresource ?? null,
      namespace ?? null,
    ]);
    const cached = this.decisions.get(key);
    if (cached && this.now() - cached.at < DECISION_TTL_MS) return cached.allowed;
    const allowed = this.review({
      user: identity.user,
      groups: identity.groups,
      verb,
      group: type.group,
      resource: type.plural,
      ...(type.subresource ? { subresource: type.subresource } : {}),
      namespace,
    });
    // A failed review is not a decision: the next ask tries again.
    allowed.catch(() => {
      if (this.decisions.get(key)?.allowed === allowed) this.decisions.delete(key);
    });
    this.remember(key, { allowed, at: this.now() });
    return allowed;
  }

  /**
   * The `candidates` where `identity` may `verb` the type. One review of the whole cluster
   * answers for all (what a ClusterRoleBinding grants covers every namespace, so nothing is
   * widened); otherwise each namespace is reviewed, REVIEWS_IN_FLIGHT at a time.
   */
  async namespacesAllowed(
    identity: Identity,
    verb: string,
    type: ReviewedType,
    candidates: readonly string[],
  ): Promise<string[]> {
    if (await this.can(identity, verb, type)) return [...candidates];
    const allowed: string[] = [];
    for (let i = 0; i < candidates.length; i += REVIEWS_IN_FLIGHT) {
      const batch = candidates.slice(i, i + REVIEWS_IN_FLIGHT);
      const answers = await Promise.all(batch.map((namespace) => this.can(identity, verb, type, namespace)));
      allowed.push(...batch.filter((_, j) => answers[j]));
    }
    return allowed;
  }

  /** How many decisions are remembered (for tests of the bound). */
  get size(): number {
    return this.decisions.size;
  }

  private remember(key: string, decision: { allowed: Promise<boolean>; at: number }): void {
    this.decisions.delete(key); // re-inserted last: the map's order is oldest first
    this.decisions.set(key, decision);
    if (this.decisions.size <= MAX_DECISIONS) return;
    const now = this.now();
    for (const [old, { at }] of this.decisions) if (now - at >= DECISION_TTL_MS) this.decisions.delete(old);
    for (const old of this.decisions.keys()) {
      if (this.decisions.size <= MAX_DECISIONS) break;
      this.decisions.delete(old);
    }
  }
}

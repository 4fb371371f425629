import { describe, expect, it } from "vitest";
import type { AccessRequest } from "../runtime/authorization.ts";
import { AccessReviews, DECISION_TTL_MS, MAX_DECISIONS, REVIEWS_IN_FLIGHT } from "./access.ts";

const VMS = { group: "stratus.io", plural: "virtualmachines" };
const NAMESPACES = Array.from({ length: 1000 }, (_, i) => `account-${i}`);

/** RBAC as a table: who may list where ("*" is a ClusterRoleBinding), counting the reviews asked. */
function rbac(grants: Record<string, readonly string[]>) {
  const state = { reviews: 0, inFlight: 0, mostInFlight: 0 };
  const review = async (request: AccessRequest) => {
    state.reviews++;
    state.inFlight++;
    state.mostInFlight = Math.max(state.mostInFlight, state.inFlight);
    await new Promise(setImmediate);
    state.inFlight--;
    const granted = [request.user, ...request.groups].flatMap((subject) => grants[subject] ?? []);
    return request.verb === "list" && (granted.includes("*") || granted.includes(request.namespace ?? "*"));
  };
  return { state, review };
}

describe("access reviews", () => {
  it("answers a list across every account with one review for a cluster-wide role", async () => {
    const { state, review } = rbac({ admin: ["*"] });
    const access = new AccessReviews(review);
    const admin = { user: "admin", groups: [] };
    expect(await access.namespacesAllowed(admin, "list", VMS, NAMESPACES)).toEqual(NAMESPACES);
    expect(state.reviews).toBe(1);
  });

  it("reviews namespace by namespace otherwise, a few at a time, and never widens", async () => {
    const { state, review } = rbac({ alice: ["account-1"], auditors: ["account-7"] });
    const access = new AccessReviews(review);
    const alice = { user: "alice", groups: [] };
    expect(await access.namespacesAllowed(alice, "list", VMS, NAMESPACES)).toEqual(["account-1"]);
    expect(state.reviews).toBe(1 + NAMESPACES.length);
    expect(state.mostInFlight).toBeLessThanOrEqual(REVIEWS_IN_FLIGHT);
    // Another identity (a group more) shares no decision with alice's.
    const auditor = { user: "alice", groups: ["auditors"] };
    expect(await access.namespacesAllowed(auditor, "list", VMS, NAMESPACES)).toEqual([
      "account-1",
      "account-7",
    ]);
    // Nor does another verb or type.
    expect(await access.can(alice, "delete", VMS, "account-1")).toBe(false);
    expect(await access.can(alice, "list", { group: "stratus.io", plural: "volumes" }, "account-2")).toBe(
      false,
    );
  });

  it("asks again only once the decisions are older than their time to live, concurrent asks sharing one", async () => {
    let now = 0;
    const { state, review } = rbac({ alice: ["account-1"] });
    const access = new AccessReviews(review, () => now);
    const alice = { user: "alice", groups: [] };
    await Promise.all([
      access.namespacesAllowed(alice, "list", VMS, NAMESPACES),
      access.namespacesAllowed(alice, "list", VMS, NAMESPACES),
    ]);
    expect(state.reviews).toBe(1 + NAMESPACES.length);
    now += DECISION_TTL_MS - 1;
    await access.namespacesAllowed(alice, "list", VMS, NAMESPACES);
    expect(state.reviews).toBe(1 + NAMESPACES.length);
    now += 1;
    await access.namespacesAllowed(alice, "list", VMS, NAMESPACES);
    expect(state.reviews).toBe(2 * (1 + NAMESPACES.length));
  });

  it("keeps a bounded number of decisions and forgets a failed review", async () => {
    const { review } = rbac({});
    const access = new AccessReviews(review);
    const many = Array.from({ length: MAX_DECISIONS + 500 }, (_, i) => `ns-${i}`);
    await access.namespacesAllowed({ user: "u", groups: [] }, "list", VMS, many);
    expect(access.size).toBeLessThanOrEqual(MAX_DECISIONS);
    let fail = true;
    const flaky = new AccessReviews(async () => {
      if (fail) throw new Error("API server unreachable");
      return true;
    });
    await expect(flaky.can({ user: "u", groups: [] }, "list", VMS, "a")).rejects.toThrow(/unreachable/);
    fail = false;
    expect(await flaky.can({ user: "u", groups: [] }, "list", VMS, "a")).toBe(true);
  });
});

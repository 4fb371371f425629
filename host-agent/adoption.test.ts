import { describe, expect, it } from "vitest";
import { judgeDomain } from "./adoption.ts";
import type { ObservedDomain } from "./hypervisor.ts";
import { OWNER } from "./testing/fixtures.ts";

const domain = (owner?: ObservedDomain["owner"]): ObservedDomain => ({
  vmUid: "u1",
  uuid: "u1",
  state: "running",
  ...(owner ? { owner } : {}),
  disks: [],
});
const vm = (uid: string, host?: string) => ({ metadata: { uid }, status: host ? { host } : {} });

describe("judgeDomain", () => {
  it("acts only on its own domains, and stops one only when a fresh read shows its VM gone or elsewhere", () => {
    const cases: [ObservedDomain, ReturnType<typeof vm> | undefined, string][] = [
      [domain({ ...OWNER, cluster: "another-cluster" }), undefined, "foreign"], // a re-installed control plane's
      [domain({ ...OWNER, host: "renamed" }), undefined, "foreign"], // the same daemon, another host name
      [domain(undefined), undefined, "foreign"], // unmarked: an older agent's, never guessed at
      [domain(OWNER), vm("u1", OWNER.host), "bound"],
      [domain(OWNER), vm("u1", "h2"), "orphaned"], // moved without this host letting go
      [domain(OWNER), vm("u1"), "orphaned"],
      [domain(OWNER), vm("another-uid", OWNER.host), "orphaned"], // the name was reused by a new VM
      [domain(OWNER), undefined, "orphaned"], // deleted
    ];
    for (const [observed, current, verdict] of cases)
      expect({ owner: observed.owner, vm: current, verdict: judgeDomain(observed, OWNER, current) }).toEqual({
        owner: observed.owner,
        vm: current,
        verdict,
      });
  });
});

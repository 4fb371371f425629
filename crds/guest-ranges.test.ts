import { describe, expect, it } from "vitest";
import {
  cidrContains,
  cidrProblem,
  cidrsOverlap,
  freeCidr,
  zoneGuestCidrs,
  zoneVlanRange,
} from "./guest-ranges.ts";
import type { Network, Zone } from "./index.ts";

const zone = (spec: Partial<Zone["spec"]> = {}) => ({ metadata: { name: "z" }, spec }) as Zone;
const network = (namespace: string, name: string, cidr: string, created?: string) =>
  ({
    metadata: { namespace, name, ...(created ? { creationTimestamp: created } : {}) },
    spec: { zone: "z", cidr },
  }) as Network;

describe("guest CIDR ranges", () => {
  it("tells overlap and containment apart", () => {
    expect(cidrsOverlap("192.168.10.0/29", "192.168.10.4/30")).toBe(true);
    expect(cidrsOverlap("192.168.10.0/29", "192.168.10.8/29")).toBe(false);
    expect(cidrsOverlap("10.0.0.0/8", "10.200.0.0/24")).toBe(true);
    expect(cidrContains("10.1.0.0/16", "10.1.7.0/24")).toBe(true);
    expect(cidrContains("10.1.0.0/16", "10.0.255.0/23")).toBe(false);
    expect(cidrContains("10.1.0.0/24", "10.1.0.0/16")).toBe(false);
  });

  it("defaults the zone's ranges", () => {
    expect(zoneGuestCidrs(zone())).toEqual(["10.0.0.0/8"]);
    expect(zoneVlanRange(zone())).toEqual({ first: 100, last: 4094 });
    expect(zoneVlanRange(zone({ vlanRange: "200-209" }))).toEqual({ first: 200, last: 209 });
  });

  it("refuses a CIDR over the zone's public network, where a gateway would answer for public addresses", () => {
    const withPublic = zone({
      publicNetwork: {
        bridge: "br-pub",
        cidr: "10.9.0.0/24",
        gateway: "10.9.0.1",
        ranges: [{ start: "10.9.0.10", end: "10.9.0.20" }],
      },
    });
    expect(cidrProblem(network("t1", "n", "10.9.0.0/25"), withPublic, [], [])).toMatchObject({
      reason: "CidrReserved",
      message: expect.stringContaining("public network 10.9.0.0/24"),
    });
    expect(cidrProblem(network("t1", "n", "10.9.1.0/24"), withPublic, [], [])).toBeUndefined();
  });

  it("refuses a CIDR outside the zone's guest ranges", () => {
    const problem = cidrProblem(network("t1", "n", "192.168.10.0/29"), zone(), [], []);
    expect(problem?.reason).toBe("CidrNotAllowed");
    expect(problem?.message).toContain("outside zone z's guest ranges (10.0.0.0/8)");
    expect(cidrProblem(network("t1", "n", "192.168.10.0/29"), zone({ guestCidrs: [] }), [], [])?.reason).toBe(
      "CidrNotAllowed",
    );
    expect(cidrProblem(network("t1", "n", "10.1.3.0/24"), zone(), [], [])).toBeUndefined();
  });

  it("refuses the younger of two overlapping networks, whoever asks", () => {
    const first = network("t1", "a", "10.1.0.0/24", "2026-01-01T00:00:00Z");
    const second = network("t2", "b", "10.1.0.128/25", "2026-01-02T00:00:00Z");
    expect(cidrProblem(first, zone(), [first, second], [])).toBeUndefined();
    const problem = cidrProblem(second, zone(), [first, second], []);
    expect(problem?.reason).toBe("CidrOverlaps");
    expect(problem?.message).not.toContain("t1"); // another tenant's network stays unnamed
    // Not created yet (the API component asking up front): every existing one wins.
    expect(cidrProblem(network("t3", "c", "10.1.0.0/16"), zone(), [first], [])?.reason).toBe("CidrOverlaps");
    // A network being deleted no longer holds its range.
    const leaving = { ...first, metadata: { ...first.metadata, deletionTimestamp: "x" } } as Network;
    expect(cidrProblem(second, zone(), [leaving, second], [])).toBeUndefined();
  });

  it("refuses a CIDR over the cluster's own ranges, even for a network older than them", () => {
    const services = [{ cidr: "10.0.0.0/24", use: "the cluster's Service range" }];
    const problem = cidrProblem(
      network("t1", "n", "10.0.0.128/25", "2020-01-01T00:00:00Z"),
      zone(),
      [],
      services,
    );
    expect(problem).toEqual({
      reason: "CidrReserved",
      message:
        "cidr 10.0.0.128/25 overlaps the cluster's Service range 10.0.0.0/24, which guest networks may not shadow",
    });
    expect(cidrProblem(network("t1", "n", "10.0.1.0/24"), zone(), [], services)).toBeUndefined();
    // Outside the zone's ranges says so first: that is what the tenant can change.
    expect(cidrProblem(network("t1", "n", "192.168.0.0/16"), zone(), [], services)?.reason).toBe(
      "CidrNotAllowed",
    );
  });
});

describe("a free CIDR for a network that names none", () => {
  it("is CloudStack's 10.1.1.0/24 when free, else the next free /24 of the zone's ranges", () => {
    expect(freeCidr(zone(), [], [])).toBe("10.1.1.0/24");
    expect(freeCidr(zone(), [network("t", "a", "10.1.1.0/24")], [])).toBe("10.0.0.0/24");
    const z = zone({ guestCidrs: ["10.240.0.0/23"] });
    expect(freeCidr(z, [network("t", "a", "10.240.0.0/25")], [])).toBe("10.240.1.0/24");
    expect(freeCidr(z, [network("t", "a", "10.240.0.0/23")], [])).toBeUndefined();
  });

  it("skips the cluster's own ranges", () => {
    const reserved = [
      { cidr: "10.0.0.0/24", use: "the cluster's Service range" },
      { cidr: "10.0.1.0/24", use: "a node's pod range" },
      { cidr: "10.1.1.0/28", use: "a node's pod range" },
    ];
    expect(freeCidr(zone(), [network("t", "a", "10.1.1.0/24")], reserved)).toBe("10.0.2.0/24");
    expect(freeCidr(zone(), [], reserved)).toBe("10.0.2.0/24");
    expect(freeCidr(zone({ guestCidrs: ["10.0.0.0/23"] }), [], reserved)).toBeUndefined();
  });
});

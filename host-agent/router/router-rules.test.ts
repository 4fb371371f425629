import { describe, expect, it } from "vitest";
import { BASE_RULES, WEB_FORWARD } from "../testing/router-fixtures.ts";
import { RouterRuleError, routerRuleset } from "./router-rules.ts";

const base = BASE_RULES;

describe("routerRuleset", () => {
  it("replaces the whole ruleset: source NAT out of the public side, nothing in unless a rule allows it", () => {
    const text = routerRuleset(base);
    expect(text.startsWith("flush ruleset\ntable ip stratus_router {")).toBe(true);
    expect(text).toContain('oifname "public" ip saddr 10.1.1.0/24 snat to 198.51.100.10');
    expect(text).toContain("type filter hook forward priority filter; policy drop;");
    expect(text).toContain('iifname "guest" oifname "public" ip saddr 10.1.1.0/24 accept');
    expect(text).toContain('iifname "guest" ip daddr 10.1.1.1 tcp dport { 53, 80 } accept');
    expect(text).not.toContain("dnat");
  });

  it("blocks egress a rule names under an Allow policy, and lets out only what rules name under Deny", () => {
    const rule = {
      protocol: "tcp" as const,
      cidrs: ["203.0.113.0/24"],
      sources: ["10.1.1.5/32"],
      ports: { start: 25, end: 25 },
    };
    const allow = routerRuleset({ ...base, egress: [rule] });
    expect(allow).toContain(
      'iifname "guest" oifname "public" ip saddr { 10.1.1.5/32 } ip daddr { 203.0.113.0/24 } tcp dport 25 drop',
    );
    expect(allow).toContain('iifname "guest" oifname "public" ip saddr 10.1.1.0/24 accept');
    const deny = routerRuleset({
      ...base,
      egressDefaultAllow: false,
      egress: [{ protocol: rule.protocol, cidrs: rule.cidrs, ports: rule.ports }],
    });
    expect(deny).toContain(
      'iifname "guest" oifname "public" ip daddr { 203.0.113.0/24 } tcp dport 25 accept',
    );
    expect(deny).toContain('iifname "guest" oifname "public" ip saddr 10.1.1.0/24 drop');
  });

  it("spreads a load balancer's connections over its guests in the kernel, by turn or by source address", () => {
    const balanced = (algorithm: "roundrobin" | "source", guestIps: string[]) =>
      routerRuleset({
        ...base,
        loadBalancers: [
          {
            publicIp: "198.51.100.11",
            protocol: "tcp",
            publicPort: 80,
            guestPort: 8080,
            guestIps,
            algorithm,
          },
        ],
      });
    expect(balanced("roundrobin", ["10.1.1.5", "10.1.1.6"])).toContain(
      'iifname "public" ip daddr 198.51.100.11 tcp dport 80 dnat to numgen inc mod 2 map { 0 : 10.1.1.5, 1 : 10.1.1.6 } : 8080',
    );
    expect(balanced("source", ["10.1.1.5"])).toContain(
      "dnat to jhash ip saddr mod 1 map { 0 : 10.1.1.5 } : 8080",
    );
    // No member: nothing answers, rather than an empty map nft refuses.
    expect(balanced("roundrobin", [])).not.toContain("dnat");
    expect(() => balanced("roundrobin", ["10.1.1.5; flush ruleset"])).toThrow(RouterRuleError);
  });

  it("forwards ports and opens them only from the firewall rule's CIDRs, by the original destination", () => {
    const text = routerRuleset({
      ...base,
      portForwards: [
        WEB_FORWARD,
        {
          publicIp: "198.51.100.10",
          protocol: "udp",
          publicPorts: { start: 5000, end: 5010 },
          guestIp: "10.1.1.6",
          guestPorts: { start: 5000, end: 5010 },
        },
      ],
      firewall: [
        {
          publicIp: "198.51.100.10",
          protocol: "tcp",
          cidrs: ["203.0.113.0/24"],
          ports: { start: 8080, end: 8080 },
        },
      ],
    });
    expect(text).toContain('iifname "public" ip daddr 198.51.100.10 tcp dport 8080 dnat to 10.1.1.5:80');
    expect(text).toContain('iifname "public" ip daddr 198.51.100.10 udp dport 5000-5010 dnat to 10.1.1.6');
    expect(text).toContain(
      'iifname "public" ct original ip daddr 198.51.100.10 ip saddr { 203.0.113.0/24 } meta l4proto tcp ct original proto-dst 8080 accept',
    );
  });

  it("maps a static NAT address both ways, before the network's source NAT", () => {
    const text = routerRuleset({ ...base, staticNat: [{ publicIp: "198.51.100.11", guestIp: "10.1.1.7" }] });
    expect(text).toContain('iifname "public" ip daddr 198.51.100.11 dnat to 10.1.1.7');
    const own = text.indexOf("snat to 198.51.100.11");
    expect(own).toBeGreaterThan(0);
    expect(own).toBeLessThan(text.indexOf("snat to 198.51.100.10"));
  });

  it("turns egress rules into exceptions to the offering's default", () => {
    const rule = { protocol: "tcp" as const, cidrs: ["0.0.0.0/0"], ports: { start: 25, end: 25 } };
    expect(routerRuleset({ ...base, egress: [rule] })).toContain(
      'iifname "guest" oifname "public" ip daddr { 0.0.0.0/0 } tcp dport 25 drop',
    );
    const closed = routerRuleset({ ...base, egressDefaultAllow: false, egress: [rule] });
    expect(closed).toContain("ip daddr { 0.0.0.0/0 } tcp dport 25 accept");
    expect(closed).toContain('iifname "guest" oifname "public" ip saddr 10.1.1.0/24 drop');
  });

  it("refuses any value that is not what it claims: a ruleset is code", () => {
    const forward = {
      publicIp: "198.51.100.10",
      protocol: "tcp" as const,
      publicPorts: { start: 80, end: 80 },
      guestIp: "10.1.1.5",
      guestPorts: { start: 80, end: 80 },
    };
    for (const bad of [
      { ...base, sourceNatIp: "198.51.100.10; flush ruleset" },
      { ...base, guestCidr: "10.1.1.0/33" },
      { ...base, portForwards: [{ ...forward, publicPorts: { start: 0, end: 80 } }] },
      { ...base, portForwards: [{ ...forward, publicPorts: { start: 90, end: 80 } }] },
      { ...base, portForwards: [{ ...forward, guestPorts: { start: 80, end: 81 } }] },
      {
        ...base,
        portForwards: [
          { ...forward, publicPorts: { start: 80, end: 81 }, guestPorts: { start: 90, end: 91 } },
        ],
      },
      { ...base, firewall: [{ publicIp: "198.51.100.10", protocol: "tcp" as const, cidrs: [] }] },
      { ...base, staticNat: [{ publicIp: "x", guestIp: "10.1.1.7" }] },
    ])
      expect(() => routerRuleset(bad)).toThrow(RouterRuleError);
  });
});

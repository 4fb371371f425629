import { describe, expect, it } from "vitest";
import { hostNets, hostOverlap, specCidr } from "./host-overlap.ts";
import type { NetworkSpec } from "./network-xml.ts";

const spec = (gateway: string, netmask: string): NetworkSpec => ({
  name: "n",
  bridge: "sbr0",
  title: "tenant/net",
  dhcp: true,
  ip: { gateway, netmask, start: gateway, end: gateway },
});

const nets = hostNets(
  {
    lo: [{ family: "IPv4", cidr: "127.0.0.1/8" }],
    eth0: [
      { family: "IPv4", cidr: "192.168.10.2/24" },
      { family: "IPv6", cidr: "fd00::2/64" },
    ],
    sbr1234: [{ family: "IPv4", cidr: "10.7.0.1/24" }],
  },
  [
    { dst: "default", gateway: "192.168.10.1", dev: "eth0" },
    { dst: "172.16.0.0/12", gateway: "192.168.10.254", dev: "eth0" },
    { dst: "10.7.0.0/24", dev: "sbr1234" },
    { dst: "10.9.9.9", dev: "tun0" },
  ],
);

describe("the host's own networks", () => {
  it("are its addresses and routes, without the default route and Stratus bridges", () => {
    expect(nets.map((n) => n.cidr)).toEqual([
      "127.0.0.1/8",
      "192.168.10.2/24",
      "172.16.0.0/12",
      "10.9.9.9/32",
    ]);
  });

  it("refuse a network that would take over a host route or address", () => {
    expect(specCidr({ gateway: "192.168.10.5", netmask: "255.255.255.248", start: "", end: "" })).toBe(
      "192.168.10.0/29",
    );
    expect(hostOverlap(spec("192.168.10.5", "255.255.255.248"), nets)).toBe(
      "Network tenant/net (192.168.10.0/29) overlaps the host's address 192.168.10.2/24 on eth0; the agent does not configure it.",
    );
    expect(hostOverlap(spec("172.20.0.1", "255.255.255.0"), nets)).toContain(
      "route 172.16.0.0/12 via 192.168.10.254",
    );
    expect(hostOverlap(spec("10.9.9.1", "255.255.255.0"), nets)).toContain("route 10.9.9.9/32 dev tun0");
    // Another Stratus network's bridge, and the default route, are not the host's.
    expect(hostOverlap(spec("10.7.0.1", "255.255.255.0"), nets)).toBeUndefined();
    expect(hostOverlap(spec("10.8.0.1", "255.255.255.0"), nets)).toBeUndefined();
    const { ip: _, ...l2 } = spec("192.168.10.1", "255.255.255.0");
    expect(hostOverlap(l2, nets)).toBeUndefined(); // an L2 network has no address on the host
  });
});

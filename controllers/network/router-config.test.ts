import { describe, expect, it } from "vitest";
import type {
  FirewallRule,
  LoadBalancerRule,
  PortForwardingRule,
  PublicIPAddress,
} from "../../crds/index.ts";
import { planRouter, type RouterInputs } from "./router-config.ts";

let clock = 0;
const meta = (name: string) => ({
  name,
  namespace: "acct",
  uid: `uid-${name}`,
  creationTimestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, clock++)).toISOString(),
});

const pip = (name: string, address: string | undefined, staticNatVm?: string): PublicIPAddress => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "PublicIPAddress",
  metadata: meta(name),
  spec: { network: "net", ...(staticNatVm ? { staticNat: { virtualMachine: staticNatVm } } : {}) },
  ...(address ? { status: { address } } : {}),
});

const forward = (
  name: string,
  publicIp: string,
  port: number,
  vm = "web",
  end = port,
): PortForwardingRule => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "PortForwardingRule",
  metadata: meta(name),
  spec: {
    publicIPAddress: publicIp,
    protocol: "tcp",
    publicPort: { start: port, end },
    // One port goes to the guest's 80; a range to the same ports (the kernel maps no range onto another).
    privatePort: port === end ? { start: 80, end: 80 } : { start: port, end },
    virtualMachine: vm,
  },
});

const firewall = (name: string, publicIp: string): FirewallRule => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "FirewallRule",
  metadata: meta(name),
  spec: {
    publicIPAddress: publicIp,
    protocol: "tcp",
    ports: { start: 8080, end: 8080 },
    cidrs: ["0.0.0.0/0"],
  },
});

const balancer = (name: string, publicIp: string, port: number, vms: string[]): LoadBalancerRule => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "LoadBalancerRule",
  metadata: meta(name),
  spec: {
    publicIPAddress: publicIp,
    protocol: "tcp",
    publicPort: port,
    privatePort: 80,
    virtualMachines: vms,
  },
});

const snat = pip("net-snat", "198.51.100.10");
const extra = pip("extra", "198.51.100.11");
const guests: Record<string, string> = { web: "10.1.1.5", db: "10.1.1.6" };

const inputs = (overrides: Partial<RouterInputs>): RouterInputs => ({
  sourceNat: snat,
  publicAddresses: [snat, extra],
  portForwards: [],
  loadBalancers: [],
  firewall: [],
  egress: [],
  egressDefaultAllow: true,
  guestAddress: (vm) => guests[vm],
  ...overrides,
});

describe("an isolated network's router configuration", () => {
  it("holds the source-NAT address first, then the others, with the accepted rules", () => {
    const plan = planRouter(
      inputs({ portForwards: [forward("pf", "net-snat", 8080)], firewall: [firewall("fw", "net-snat")] }),
    );
    expect(plan.config).toEqual({
      sourceNatAddress: "198.51.100.10",
      publicAddresses: ["198.51.100.10", "198.51.100.11"],
      staticNat: [],
      loadBalancers: [],
      egressDefaultAllow: true,
      egress: [],
      portForwards: [
        {
          publicAddress: "198.51.100.10",
          protocol: "tcp",
          publicPort: { start: 8080, end: 8080 },
          guestAddress: "10.1.1.5",
          privatePort: { start: 80, end: 80 },
        },
      ],
      firewall: [
        {
          publicAddress: "198.51.100.10",
          protocol: "tcp",
          ports: { start: 8080, end: 8080 },
          cidrs: ["0.0.0.0/0"],
        },
      ],
    });
    expect(plan.verdicts.get("pfr/pf")).toMatchObject({ status: "True", reason: "Active" });
    expect(plan.verdicts.get("fwr/fw")).toMatchObject({ status: "True", reason: "Active" });
  });

  it("refuses the younger of two rules over the same ports, with CloudStack's message, whichever arrives first in the list", () => {
    const older = forward("older", "net-snat", 8000, "web", 8010);
    const younger = forward("younger", "net-snat", 8005, "db");
    const plan = planRouter(inputs({ portForwards: [younger, older] }));
    expect(plan.verdicts.get("pfr/older")).toMatchObject({ status: "True" });
    expect(plan.verdicts.get("pfr/younger")).toEqual({
      type: "Accepted",
      status: "False",
      reason: "NetworkRuleConflict",
      message: "The range specified, 8005, conflicts with rule older which has 8000-8010",
    });
    expect(plan.config?.portForwards).toHaveLength(1);
  });

  it("takes the same port on another address, or another protocol, as no conflict", () => {
    const udp = {
      ...forward("udp", "net-snat", 8080),
      spec: { ...forward("x", "net-snat", 8080).spec, protocol: "udp" as const },
    };
    const plan = planRouter(
      inputs({ portForwards: [forward("a", "net-snat", 8080), forward("b", "extra", 8080), udp] }),
    );
    expect([...plan.verdicts.values()].every((v) => v.status === "True")).toBe(true);
  });

  it("refuses a port forward on a static-NAT address, and maps the static NAT both ways", () => {
    const nat = pip("nat", "198.51.100.12", "db");
    const plan = planRouter(
      inputs({ publicAddresses: [snat, nat], portForwards: [forward("pf", "nat", 22)] }),
    );
    expect(plan.verdicts.get("pfr/pf")).toMatchObject({ status: "False", reason: "StaticNatEnabled" });
    expect(plan.config?.staticNat).toEqual([{ publicAddress: "198.51.100.12", guestAddress: "10.1.1.6" }]);
    expect(plan.config?.portForwards).toEqual([]);
  });

  it("holds back rules on an address not allocated, or for a VM without an address on the network", () => {
    const pending = pip("pending", undefined);
    const plan = planRouter(
      inputs({
        publicAddresses: [snat, pending],
        portForwards: [forward("early", "pending", 80), forward("stranger", "net-snat", 81, "elsewhere")],
        firewall: [firewall("fw", "missing")],
      }),
    );
    expect(plan.verdicts.get("pfr/early")).toMatchObject({
      status: "False",
      reason: "PublicIPAddressNotFound",
    });
    expect(plan.verdicts.get("pfr/stranger")).toMatchObject({
      status: "False",
      reason: "VirtualMachineNotOnNetwork",
    });
    expect(plan.verdicts.get("fwr/fw")).toMatchObject({ status: "False", reason: "PublicIPAddressNotFound" });
    expect(plan.config?.portForwards).toEqual([]);
  });

  it("spreads a load balancer over its VMs that have an address, and shares the address's ports with port forwards", () => {
    const web = balancer("web", "extra", 80, ["web", "db", "elsewhere"]);
    const plan = planRouter(
      inputs({
        loadBalancers: [web, balancer("late", "extra", 80, ["web"])],
        portForwards: [forward("forward-late", "extra", 80)],
      }),
    );
    expect(plan.config?.loadBalancers).toEqual([
      {
        publicAddress: "198.51.100.11",
        protocol: "tcp",
        publicPort: 80,
        privatePort: 80,
        algorithm: "roundrobin",
        guestAddresses: ["10.1.1.5", "10.1.1.6"],
      },
    ]);
    expect(plan.verdicts.get("lbr/web")).toMatchObject({ status: "True", reason: "Active" });
    for (const key of ["lbr/late", "pfr/forward-late"])
      expect(plan.verdicts.get(key)).toMatchObject({
        status: "False",
        reason: "NetworkRuleConflict",
        message: "The range specified, 80, conflicts with rule web which has 80",
      });
  });

  it("refuses a load balancer on a static-NAT address", () => {
    const nat = pip("nat", "198.51.100.12", "db");
    const plan = planRouter(
      inputs({ publicAddresses: [snat, nat], loadBalancers: [balancer("lb", "nat", 80, ["web"])] }),
    );
    expect(plan.verdicts.get("lbr/lb")).toMatchObject({ status: "False", reason: "StaticNatEnabled" });
  });

  it("refuses a port range forwarded onto other ports, which the kernel cannot map", () => {
    const ranged = forward("remapped", "net-snat", 8000, "web", 8010);
    const remapped = { ...ranged, spec: { ...ranged.spec, privatePort: { start: 9000, end: 9010 } } };
    const plan = planRouter(inputs({ portForwards: [remapped] }));
    expect(plan.verdicts.get("pfr/remapped")).toMatchObject({ status: "False", reason: "PortRangeRemapped" });
    expect(plan.config?.portForwards).toEqual([]);
  });

  it("configures no router before the source-NAT address is allocated", () => {
    expect(planRouter(inputs({ sourceNat: pip("net-snat", undefined) })).config).toBeUndefined();
  });
});

import { describe, expect, it } from "vitest";
import { addressPlan, addressProblem, allocatableAddresses, allocatableCount } from "./addressing.ts";
import type { Network } from "./index.ts";

const network = (spec: Partial<Network["spec"]> = {}): Network => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Network",
  metadata: { name: "backend", namespace: "team-a" },
  spec: { zone: "z1", type: "Isolated", cidr: "10.20.0.0/24", ...spec },
});

describe("addressPlan", () => {
  it("plans gateway, netmask and range from the CIDR, or from the spec", () => {
    expect(addressPlan(network())).toEqual({
      gateway: "10.20.0.1",
      netmask: "255.255.255.0",
      network: "10.20.0.0",
      broadcast: "10.20.0.255",
      start: "10.20.0.2",
      end: "10.20.0.254",
    });
    expect(
      addressPlan(
        network({
          cidr: "10.8.0.0/22",
          gateway: "10.8.3.254",
          ipRange: { start: "10.8.0.10", end: "10.8.0.20" },
        }),
      ),
    ).toMatchObject({
      gateway: "10.8.3.254",
      netmask: "255.255.252.0",
      start: "10.8.0.10",
      end: "10.8.0.20",
    });
    expect(addressPlan(network({ type: "L2", cidr: undefined as never }))).toBeUndefined();
  });
});

describe("allocation range", () => {
  it("hands out the range in order, without the gateway", () => {
    const plan = addressPlan(network({ cidr: "10.1.1.0/29", gateway: "10.1.1.3" })) as NonNullable<
      ReturnType<typeof addressPlan>
    >;
    expect([...allocatableAddresses(plan)]).toEqual(["10.1.1.2", "10.1.1.4", "10.1.1.5", "10.1.1.6"]);
    expect(allocatableCount(plan)).toBe(4);
    expect(allocatableCount(addressPlan(network()) as never)).toBe(253);
  });

  it("refuses network, broadcast, gateway and outside addresses for static use", () => {
    const plan = addressPlan(network()) as NonNullable<ReturnType<typeof addressPlan>>;
    expect(addressProblem(plan, "10.20.0.77")).toBeUndefined();
    expect(addressProblem(plan, "10.20.0.1")).toBe("10.20.0.1 is the network's gateway");
    expect(addressProblem(plan, "10.20.0.0")).toBe("10.20.0.0 is not a host address of 10.20.0.0/24");
    expect(addressProblem(plan, "10.20.0.255")).toMatch(/not a host address/);
    expect(addressProblem(plan, "10.21.0.5")).toMatch(/not a host address/);
  });
});

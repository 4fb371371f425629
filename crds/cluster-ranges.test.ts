import { describe, expect, it } from "vitest";
import { clusterRanges, type Node, podRanges, type ServiceCIDR } from "./cluster-ranges.ts";

const serviceCidr = (...cidrs: string[]): ServiceCIDR => ({ metadata: { name: "s" }, spec: { cidrs } });
const node = (spec: NonNullable<Node["spec"]>): Node => ({ metadata: { name: "n" }, spec });

describe("the cluster's own ranges", () => {
  it("are its ServiceCIDRs' and its nodes' pod CIDRs, IPv4 only, each once", () => {
    expect(
      clusterRanges(
        [serviceCidr("10.0.0.0/24", "fd00:10::/108"), serviceCidr("10.96.0.0/16")],
        [
          node({ podCIDR: "10.244.0.0/24", podCIDRs: ["10.244.0.0/24", "fd00:244::/64"] }),
          node({ podCIDRs: ["10.244.1.0/24"] }),
          node({}),
          node({ podCIDR: "10.96.0.0/16" }),
        ],
      ),
    ).toEqual([
      { cidr: "10.0.0.0/24", use: "the cluster's Service range" },
      { cidr: "10.96.0.0/16", use: "the cluster's Service range" },
      { cidr: "10.244.0.0/24", use: "a node's pod range" },
      { cidr: "10.244.1.0/24", use: "a node's pod range" },
    ]);
  });

  it("reads a node's older podCIDR alone", () => {
    expect(podRanges(node({ podCIDR: "10.244.3.0/24" }))).toEqual(["10.244.3.0/24"]);
    expect(podRanges({ metadata: { name: "bare" } })).toEqual([]);
  });
});

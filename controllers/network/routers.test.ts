import { describe, expect, it } from "vitest";
import type { Host } from "../../crds/index.ts";
import { publicCandidates } from "./public-addresses.ts";
import { placeRouter } from "./routers.ts";

const host = (name: string, ready: boolean, extra: Partial<Host["spec"]> = {}): Host => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Host",
  metadata: { name },
  spec: { zone: "z", ...extra } as Host["spec"],
  status: {
    conditions: [
      { type: "Ready", status: ready ? "True" : "False", reason: "x", message: "", lastTransitionTime: "" },
    ],
  },
});

describe("routers' public addresses and hosts", () => {
  it("hands out the ranges' addresses in order, never the gateway nor the network's own ends", () => {
    const candidates = [
      ...publicCandidates({
        bridge: "br-pub",
        cidr: "198.51.100.0/29",
        gateway: "198.51.100.1",
        ranges: [
          { start: "198.51.100.0", end: "198.51.100.3" },
          { start: "198.51.100.6", end: "198.51.100.7" },
        ],
      }),
    ];
    expect(candidates).toEqual(["198.51.100.2", "198.51.100.3", "198.51.100.6"]);
  });

  it("keeps the router's host while it is Ready, and moves it to the Ready host with most of the network's guests", () => {
    const hosts = [host("a", true), host("b", true), host("c", false)];
    expect(placeRouter("a", hosts, new Map([["b", 3]]))?.metadata.name).toBe("a");
    expect(placeRouter("c", hosts, new Map([["b", 3]]))?.metadata.name).toBe("b");
    expect(placeRouter(undefined, hosts, new Map())?.metadata.name).toBe("a");
    expect(placeRouter("c", [host("c", false)], new Map())).toBeUndefined();
  });

  it("places no new router on a host in maintenance", () => {
    expect(
      placeRouter(undefined, [host("m", true, { maintenance: true }), host("n", true)], new Map())?.metadata
        .name,
    ).toBe("n");
  });
});

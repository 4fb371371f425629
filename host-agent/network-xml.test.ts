import { describe, expect, it } from "vitest";
import type { Network } from "../crds/index.ts";
import {
  bridgeName,
  buildNetworkXml,
  dhcpHostsIn,
  libvirtNetworkName,
  networkPrefix,
  networkSpecFor,
  reservationChanges,
} from "./network-xml.ts";

const UID = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const OWNER = { cluster: "c0ffee00-0000-4000-8000-000000000001", host: "h1" };
const network = (spec: Partial<Network["spec"]> = {}): Network => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Network",
  metadata: { name: "backend", namespace: "team-a", uid: UID },
  spec: { zone: "z1", type: "Isolated", cidr: "10.20.0.0/24", ...spec },
});

describe("network XML", () => {
  it("reserves each NIC's address by MAC", () => {
    const spec = networkSpecFor(network(), OWNER);
    const xml = buildNetworkXml(spec, [{ mac: "52:54:00:aa:bb:01", ip: "10.20.0.20", name: "web-1" }]);
    expect(xml).toContain(`<name>${libvirtNetworkName(OWNER, UID)}</name>`);
    expect(xml).toContain(`<bridge name='${bridgeName(OWNER, UID)}' stp='off'/>`);
    expect(xml).toContain("<ip address='10.20.0.1' netmask='255.255.255.0'>");
    expect(xml).toContain("<host mac='52:54:00:aa:bb:01' name='web-1' ip='10.20.0.20'/>");
    expect(dhcpHostsIn(xml)).toEqual([{ mac: "52:54:00:aa:bb:01", ip: "10.20.0.20", name: "web-1" }]);
  });

  it("names networks and bridges per owner, so two clusters or hosts on one daemon never share one", () => {
    const other = { ...OWNER, cluster: "c0ffee00-0000-4000-8000-000000000002" };
    expect(libvirtNetworkName(OWNER, UID).startsWith(networkPrefix(OWNER))).toBe(true);
    expect(libvirtNetworkName(other, UID).startsWith(networkPrefix(OWNER))).toBe(false);
    expect(libvirtNetworkName({ ...OWNER, host: "h2" }, UID)).not.toBe(libvirtNetworkName(OWNER, UID));
    expect(bridgeName(other, UID)).not.toBe(bridgeName(OWNER, UID));
    expect(bridgeName(OWNER, UID)).toMatch(/^sbr[0-9a-f]{12}$/); // Linux's 15 characters
  });

  it("has no addresses for L2 networks and no DHCP when it is off", () => {
    const l2 = networkSpecFor(network({ type: "L2", cidr: undefined as never }), OWNER);
    expect(buildNetworkXml(l2, [])).not.toContain("<ip");
    expect(buildNetworkXml(networkSpecFor(network({ dhcp: false }), OWNER), [])).not.toContain("<dhcp>");
  });

  it("changes only the reservations that differ", () => {
    const a = { mac: "52:54:00:00:00:01", ip: "10.20.0.2", name: "a" };
    const b = { mac: "52:54:00:00:00:02", ip: "10.20.0.3", name: "b" };
    const moved = { ...b, ip: "10.20.0.4" };
    expect(reservationChanges([a, b], [a, moved])).toEqual({ remove: [b], add: [moved] });
    expect(reservationChanges([a], [a])).toEqual({ remove: [], add: [] });
  });
});

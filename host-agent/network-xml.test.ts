import { describe, expect, it } from "vitest";
import type { Network } from "../crds/index.ts";
import { bridgeName, buildNetworkXml, dhcpHostsIn, libvirtNetworkName } from "./network-xml.ts";

const UID = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const network = (spec: Partial<Network["spec"]> = {}): Network => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Network",
  metadata: { name: "backend", namespace: "team-a", uid: UID },
  spec: { zone: "z1", type: "Isolated", cidr: "10.20.0.0/24", ...spec },
});

describe("network XML", () => {
  it("reserves each NIC's address by MAC", () => {
    const xml = buildNetworkXml(network(), [{ mac: "52:54:00:aa:bb:01", ip: "10.20.0.20", name: "web-1" }]);
    expect(xml).toContain(`<name>${libvirtNetworkName(UID)}</name>`);
    expect(xml).toContain(`<bridge name='${bridgeName(UID)}' stp='off'/>`);
    expect(xml).toContain("<ip address='10.20.0.1' netmask='255.255.255.0'>");
    expect(xml).toContain("<host mac='52:54:00:aa:bb:01' name='web-1' ip='10.20.0.20'/>");
    expect(dhcpHostsIn(xml)).toEqual([{ mac: "52:54:00:aa:bb:01", ip: "10.20.0.20", name: "web-1" }]);
  });

  it("keeps bridge names within Linux's 15 characters", () => {
    expect(bridgeName(UID)).toBe("sbr7c9e66797425");
    expect(bridgeName(UID).length).toBeLessThanOrEqual(15);
  });

  it("has no addresses for L2 networks and no DHCP when it is off", () => {
    expect(buildNetworkXml(network({ type: "L2", cidr: undefined as never }), [])).not.toContain("<ip");
    expect(buildNetworkXml(network({ dhcp: false }), [])).not.toContain("<dhcp>");
  });
});

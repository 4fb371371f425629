import { describe, expect, it } from "vitest";
import type { VirtualMachine } from "./index.ts";
import { macFor, nicMacAddress } from "./nics.ts";

const UID = "0b8e5c3e-2f6d-4c1a-9a55-6d1f3e2b7c90";

describe("NIC MAC addresses", () => {
  it("derives stable, unicast, locally administered MACs from the VM UID", () => {
    expect(macFor(UID, 0)).toBe("52:54:00:0b:8e:5c");
    expect(macFor(UID, 1)).toBe("52:54:00:0b:8e:5d");
  });

  it("keeps a MAC the spec fixes", () => {
    const vm = {
      metadata: { name: "web", namespace: "a", uid: UID },
      spec: {
        zone: "z",
        serviceOffering: "s",
        template: "t",
        nics: [
          { name: "eth0", network: "n", macAddress: "52:54:00:aa:bb:cc" },
          { name: "eth1", network: "n" },
        ],
      },
    } as VirtualMachine;
    expect(nicMacAddress(vm, 0)).toBe("52:54:00:aa:bb:cc");
    expect(nicMacAddress(vm, 1)).toBe("52:54:00:0b:8e:5d");
  });
});

import { describe, expect, it } from "vitest";
import type { Host } from "../../crds/index.ts";
import { allocatable, type Demand, type HostUsage, place, unfitReason } from "./placement.ts";

const GI = 1024n ** 3n;

function host(
  name: string,
  overrides: { spec?: Partial<Host["spec"]>; status?: Partial<NonNullable<Host["status"]>> } = {},
): Host {
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Host",
    metadata: { name },
    spec: { zone: "z1", ...overrides.spec },
    status: {
      capacity: { cpu: 8, memory: "16Gi" },
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "HeartbeatCurrent",
          message: "",
          lastTransitionTime: "2026-01-01T00:00:00Z",
        },
      ],
      ...overrides.status,
    },
  };
}

function usage(h: Host, cpu = 0, memoryGi = 0n, groups: string[] = []): HostUsage {
  return { host: h, cpu, memoryBytes: memoryGi * GI, groups: new Set(groups) };
}

const small: Demand = { zone: "z1", cpu: 2, memoryBytes: 4n * GI, hostTags: [] };

describe("allocatable", () => {
  it("multiplies capacity by the overcommit ratios", () => {
    expect(allocatable(host("a", { spec: { cpuOvercommitRatio: 2, memoryOvercommitRatio: 1.5 } }))).toEqual({
      cpu: 16,
      memoryBytes: 24n * GI,
    });
  });
});

describe("unfitReason", () => {
  it("names the first filter a host fails", () => {
    const notReady = host("a", { status: { conditions: [] } });
    expect(unfitReason(small, usage(notReady))).toBe("not ready");
    expect(unfitReason(small, usage(host("a", { spec: { maintenance: true } })))).toBe("in maintenance");
    expect(unfitReason(small, usage(host("a", { status: { resourceState: "Maintenance" } })))).toBe(
      "in maintenance",
    );
    expect(unfitReason(small, usage(host("a", { spec: { allocationState: "Disabled" } })))).toBe("disabled");
    expect(unfitReason(small, usage(host("a", { spec: { degraded: true } })))).toBe("declared degraded");
    expect(unfitReason({ ...small, hostTags: ["ssd"] }, usage(host("a", { spec: { tags: ["gpu"] } })))).toBe(
      "missing host tags",
    );
    expect(
      unfitReason({ ...small, hostTags: ["ssd"] }, usage(host("a", { spec: { tags: ["ssd", "gpu"] } }))),
    ).toBe(undefined);
    expect(
      unfitReason({ ...small, antiAffinityGroups: ["ns/web"] }, usage(host("a"), 0, 0n, ["ns/web"])),
    ).toBe("anti-affinity");
    expect(unfitReason(small, usage(host("a"), 7))).toBe("insufficient CPU");
    expect(unfitReason(small, usage(host("a"), 6, 13n))).toBe("insufficient memory");
    expect(unfitReason(small, usage(host("a"), 6, 12n))).toBe(undefined); // exactly full is allowed
    expect(unfitReason({ ...small, pinnedHost: "b" }, usage(host("a")))).toBe("not the pinned host");
  });

  it("keeps a VM on the host whose local pool holds its data volume", () => {
    const bound = { ...small, volumeHosts: [{ volume: "data", host: "b" }] };
    expect(unfitReason(bound, usage(host("a")))).toBe("volume data is on host b");
    expect(unfitReason(bound, usage(host("b")))).toBe(undefined);
    expect(place(bound, [usage(host("a")), usage(host("b"), 6)], "least-allocated")).toMatchObject({
      host: "b",
    });
    expect(
      place(bound, [usage(host("a")), usage(host("b", { status: { conditions: [] } }))], "first-fit"),
    ).toMatchObject({ message: "0/2 hosts: 1 not ready, 1 volume data is on host b" });
  });

  it("drops hosts whose pools cannot take the VM's disks, saying why", () => {
    const withPool = (name: string) =>
      host(name, { status: { storagePools: [{ name: `local-${name}`, ready: true, capacity: "10Gi" }] } });
    const pool = (h: string) => ({
      apiVersion: "stratus.io/v1alpha1" as const,
      kind: "StoragePool",
      metadata: { name: `local-${h}` },
      spec: { zone: "z1", type: "local" as const, host: h },
    });
    const storage = {
      volumes: [{ volume: "root", sizeBytes: 8n * GI, tags: [] }],
      pools: [
        { pool: pool("a"), allocatedBytes: 4n * GI },
        { pool: pool("b"), allocatedBytes: 0n },
      ],
    };
    expect(unfitReason(small, usage(withPool("a")), storage)).toBe(
      "volume root: pool local-a has too little room",
    );
    expect(unfitReason(small, usage(withPool("b")), storage)).toBe(undefined);
    expect(
      place(small, [usage(withPool("a")), usage(withPool("b"), 6)], "least-allocated", storage),
    ).toMatchObject({
      host: "b",
    });
    expect(place(small, [usage(withPool("a"))], "first-fit", storage).message).toBe(
      "0/1 hosts: 1 volume root: pool local-a has too little room",
    );
  });

  it("lets overcommit admit more than the physical capacity", () => {
    expect(unfitReason(small, usage(host("a"), 8))).toBe("insufficient CPU");
    expect(unfitReason(small, usage(host("a", { spec: { cpuOvercommitRatio: 2 } }), 8))).toBe(undefined);
  });
});

describe("place", () => {
  const hosts = [usage(host("a"), 6, 8n), usage(host("b"), 2, 4n), usage(host("c"), 4, 4n)];

  it("least-allocated picks the host with the most room left", () => {
    expect(place(small, hosts, "least-allocated")).toMatchObject({ host: "b" });
  });

  it("first-fit picks the first host by name that fits", () => {
    expect(place(small, hosts, "first-fit")).toMatchObject({ host: "a" });
    expect(place({ ...small, cpu: 4 }, hosts, "first-fit")).toMatchObject({ host: "b" });
  });

  it("counts only the VM's zone and says why no host fits, per reason", () => {
    const placement = place(
      { ...small, memoryBytes: 10n * GI },
      [
        usage(host("a"), 0, 8n),
        usage(host("b"), 0, 8n),
        usage(host("c"), 0, 8n),
        usage(host("d", { spec: { maintenance: true } })),
        usage(host("e", { spec: { maintenance: true } })),
        usage(host("x", { spec: { zone: "z2" } })),
      ],
      "least-allocated",
    );
    expect(placement.host).toBeUndefined();
    expect(placement.message).toBe("0/5 hosts: 3 insufficient memory, 2 in maintenance");
  });

  it("says so when the zone has no hosts", () => {
    expect(place({ ...small, zone: "empty" }, hosts, "least-allocated").message).toBe(
      "no hosts in zone empty",
    );
  });

  it("spreads a series of VMs evenly under least-allocated", () => {
    const spread = [usage(host("a")), usage(host("b")), usage(host("c")), usage(host("d"))];
    for (let i = 0; i < 8; i++) {
      const chosen = place({ ...small, cpu: 1, memoryBytes: GI }, spread, "least-allocated");
      const target = spread.find((u) => u.host.metadata.name === chosen.host) as HostUsage;
      spread[spread.indexOf(target)] = {
        ...target,
        cpu: target.cpu + 1,
        memoryBytes: target.memoryBytes + GI,
      };
    }
    expect(spread.map((u) => u.cpu)).toEqual([2, 2, 2, 2]);
  });
});

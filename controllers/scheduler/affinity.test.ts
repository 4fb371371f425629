// Host affinity and anti-affinity: the rules (pure), the VM's groups sorted by type, and the
// scheduler's assumed placements that keep two VMs of one group apart when both are chosen before
// the informer cache shows either.
import { describe, expect, it } from "vitest";
import type { Host, ServiceOffering, VirtualMachine } from "../../crds/index.ts";
import type { Informer } from "../../runtime/informer.ts";
import { judgeTargets, type MigrationInput } from "../compute/migration-decision.ts";
import { host, input, summary, usage, vm } from "../compute/orchestration.fixtures.ts";
import { decideOrchestration } from "../compute/orchestration.ts";
import { affinityOf, HostUsageCache } from "./host-usage.ts";
import { AFFINITY_REASON, type Demand, type HostUsage, place, unfitReason } from "./placement.ts";

const GI = 1024n ** 3n;
const small: Demand = { zone: "z1", cpu: 1, memoryBytes: GI, hostTags: [] };
const withGroups = (h: Host, cpu: number, groups: string[]): HostUsage => ({
  ...usage(h, cpu),
  groups: new Set(groups),
});

describe("host affinity", () => {
  const together = { ...small, affinityGroups: ["a/db"] };

  it("places the first member anywhere and every other one on the first one's host", () => {
    const empty = [usage(host("h1")), usage(host("h2"))];
    expect(place(together, empty, "least-allocated")).toMatchObject({ host: "h1" });
    // least-allocated would pick the emptier h2: the group's member on h1 wins.
    const anchored = [withGroups(host("h1"), 3, ["a/db"]), usage(host("h2"))];
    expect(place(together, anchored, "least-allocated")).toMatchObject({ host: "h1" });
  });

  it("says why when the group's host cannot take the VM, rather than placing it elsewhere", () => {
    const full = [withGroups(host("h1"), 4, ["a/db"]), usage(host("h2"))];
    const chosen = place(together, full, "least-allocated");
    expect(chosen.host).toBeUndefined();
    expect(chosen.message).toBe(`0/2 hosts: 1 insufficient CPU, 1 ${AFFINITY_REASON}`);
  });

  it("is per namespace: another account's group of the same name does not anchor", () => {
    const elsewhere = [withGroups(host("h1"), 3, ["b/db"]), usage(host("h2"))];
    expect(place(together, elsewhere, "least-allocated")).toMatchObject({ host: "h2" });
  });

  it("holds together with anti-affinity groups of the same VM", () => {
    const both = { ...together, antiAffinityGroups: ["a/web"] };
    const hosts = [withGroups(host("h1"), 0, ["a/db", "a/web"]), usage(host("h2"))];
    expect(unfitReason(both, hosts[0] as HostUsage)).toBe("anti-affinity");
    expect(place(both, hosts, "first-fit").message).toBe(`0/2 hosts: 1 anti-affinity, 1 ${AFFINITY_REASON}`);
  });
});

describe("affinityOf", () => {
  it("sorts the named groups by their type, keeps the legacy antiAffinityGroup, lists unknown names", () => {
    const types: Record<string, "host affinity" | "host anti-affinity"> = {
      db: "host affinity",
      web: "host anti-affinity",
    };
    const member = vm({ placement: { antiAffinityGroup: "old", affinityGroups: ["db", "web", "gone"] } });
    expect(affinityOf(member, (name) => types[name])).toEqual({
      affinityGroups: ["a/db"],
      antiAffinityGroups: ["a/old", "a/web"],
      missing: ["gone"],
    });
  });

  it("keeps a VM that names a group that does not exist unscheduled, with a condition naming it", () => {
    const decision = decideOrchestration(input({ vm: vm({ placement: { affinityGroups: ["gone"] } }) }));
    expect(summary(decision)).toMatchObject({ placed: undefined, scheduled: "False/AffinityGroupNotFound" });
    const scheduled = decision.status?.conditions.find((c) => c.type === "Scheduled");
    expect(scheduled?.message).toMatch(/AffinityGroup "gone" does not exist in namespace a/);
  });

  it("places a VM of a host affinity group with its group's member", () => {
    const decision = decideOrchestration(
      input({
        vm: vm({ placement: { affinityGroups: ["db"] } }),
        affinityGroupType: (name) => (name === "db" ? "host affinity" : undefined),
        // h2 is emptier; the group's member runs on h1.
        hostUsages: () => [withGroups(host("h1"), 1, ["a/db"]), usage(host("h2"))],
      }),
    );
    expect(summary(decision)).toMatchObject({ placed: "h1", scheduled: "True/Placed" });
  });
});

/** A state-based stand-in for the informer: what HostUsageCache reads of it, and nothing else. */
function cacheOf<T extends { metadata: { name?: string; namespace?: string } }>(
  objects: T[],
  hostOf: (o: T) => string | undefined = () => undefined,
): Informer<T> {
  const key = (o: T) =>
    o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
  return {
    addHandlers: () => undefined,
    get: (k: string) => objects.find((o) => key(o) === k),
    byIndex: (_: string, value: string) => objects.filter((o) => hostOf(o) === value),
  } as unknown as Informer<T>;
}

describe("concurrent placements of one group", () => {
  const offering: ServiceOffering = {
    apiVersion: "stratus.io/v1alpha1",
    kind: "ServiceOffering",
    metadata: { name: "small" },
    spec: { cpu: 1, memory: "1Gi" },
  };
  const member = (name: string, groups: string[]): VirtualMachine => ({
    ...vm({ placement: { affinityGroups: groups } }),
    metadata: { name, namespace: "a" },
  });
  // Both VMs are decided before the informer shows either placement: the cache shows nothing.
  const usages = new HostUsageCache(
    cacheOf<VirtualMachine>([], (v) => v.status?.host),
    cacheOf([offering]),
  );
  const hosts = [host("h1"), host("h2")];
  const decide = (v: VirtualMachine, type: "host affinity" | "host anti-affinity") => {
    const demand = HostUsageCache.demandOf(
      v,
      offering,
      [],
      affinityOf(v, () => type),
    );
    const chosen = place(
      demand,
      hosts.map((h) => usages.usageOf(h)),
      "least-allocated",
    );
    // As compute does: assumed with no await between choosing and assuming.
    if (chosen.host) usages.assume(`a/${v.metadata.name}`, chosen.host, demand);
    return chosen;
  };

  it("never puts two VMs of one anti-affinity group on one host, and refuses a third with two hosts", () => {
    const first = decide(member("web-1", ["web"]), "host anti-affinity");
    const second = decide(member("web-2", ["web"]), "host anti-affinity");
    expect(first.host).toBeDefined();
    expect(second.host).toBeDefined();
    expect(second.host).not.toBe(first.host);
    const third = decide(member("web-3", ["web"]), "host anti-affinity");
    expect([third.host, third.message]).toEqual([undefined, "0/2 hosts: 2 anti-affinity"]);
    // A placement that was not written stops counting: its host is free for the group again.
    usages.forget("a/web-1");
    expect(decide(member("web-3", ["web"]), "host anti-affinity").host).toBe(first.host);
  });

  it("puts every VM of one host affinity group on the first one's host", () => {
    const first = decide(member("db-1", ["db"]), "host affinity");
    const second = decide(member("db-2", ["db"]), "host affinity");
    expect(second.host).toBe(first.host);
  });
});

describe("live migration targets", () => {
  const migratable = (name: string, groups: string[] = []) => {
    const h = host(name);
    h.status = {
      ...h.status,
      hypervisor: { type: "QEMU", version: "9", libvirtVersion: "9", uri: "qemu:///system" },
    };
    h.status.migrationUri = `qemu+tcp://${name}/system`;
    return withGroups(h, 0, groups);
  };
  const targets = (demand: Demand, hosts: HostUsage[]) =>
    judgeTargets(
      {
        demand,
        hosts,
        storage: { volumes: [], pools: [], poolsByName: new Map() },
        activeOn: () => 0,
        maxPerHost: 2,
      } as unknown as MigrationInput,
      "h1",
    ).map((t) => [t.host, t.reason ?? "fits"]);

  it("keeps the VM's groups: not beside another member of its anti-affinity group, only to its affinity group's host", () => {
    // The moving VM itself is left out of the usages (usageOf's exceptVm), as compute and the API build them.
    const hosts = [
      migratable("h1"),
      migratable("h2", ["a/web"]),
      migratable("h3", ["a/db"]),
      migratable("h4"),
    ];
    expect(targets({ ...small, antiAffinityGroups: ["a/web"] }, hosts)).toEqual([
      ["h3", "fits"],
      ["h4", "fits"],
      ["h2", "anti-affinity"],
    ]);
    expect(targets({ ...small, affinityGroups: ["a/db"] }, hosts)).toEqual([
      ["h3", "fits"],
      ["h2", AFFINITY_REASON],
      ["h4", AFFINITY_REASON],
    ]);
    // Alone in its affinity group (no other member anywhere), the VM may go to any host.
    expect(targets({ ...small, affinityGroups: ["a/solo"] }, hosts).every(([, why]) => why === "fits")).toBe(
      true,
    );
  });

  it("leaves the moving VM out of its host's usage", () => {
    const alone = {
      ...vm({ placement: { affinityGroups: ["solo"] } }),
      status: { host: "h1" },
    } as VirtualMachine;
    const offering: ServiceOffering = {
      apiVersion: "stratus.io/v1alpha1",
      kind: "ServiceOffering",
      metadata: { name: "small" },
      spec: { cpu: 1, memory: "1Gi" },
    };
    const cache = new HostUsageCache(
      cacheOf<VirtualMachine>([alone], (v) => v.status?.host),
      cacheOf([offering]),
    );
    expect([...cache.usageOf(host("h1")).groups]).toEqual(["a/solo"]);
    expect(cache.usageOf(host("h1"), "a/web")).toMatchObject({ cpu: 0, groups: new Set() });
  });
});

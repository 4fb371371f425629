// The VM loop around a live migration, against the fake hypervisor: a VM whose guest left is never
// started again on the source, the guest that arrived is adopted (never started a second time),
// and maintenance waits for a live move instead of stopping the guest.
import pino from "pino";
import { describe, expect, it } from "vitest";
import type { VirtualMachine } from "../crds/index.ts";
import { FakeHypervisor } from "./fake-hypervisor.ts";
import type { ObservedDomain } from "./hypervisor.ts";
import type { MigrationHooks } from "./migration-sync.ts";
import {
  CLUSTER,
  diskTemplate,
  hostStorage,
  network,
  OWNER,
  offering,
  preparedVm,
  rootVolume,
} from "./testing/fixtures.ts";
import { MemoryWrites } from "./testing/memory-writes.ts";
import { VmSync } from "./vm-sync.ts";

const log = pino({ level: "silent" });

function rig(hooks: Partial<MigrationHooks>, options: { maintenance?: boolean } = {}) {
  const vms = new Map<string, VirtualMachine>();
  const hv = new FakeHypervisor(OWNER, "/pool");
  const writes = new MemoryWrites(vms);
  const sync = new VmSync({
    owner: OWNER,
    hypervisor: hv,
    writes,
    domainType: () => "test",
    storage: hostStorage("/pool"),
    paths: { cache: "/cache", consoleSocket: (uid) => `/console/${uid}.sock` },
    shutdownGraceMs: 60_000,
    images: { download: async () => undefined, check: async () => ({ virtualSize: 2n ** 30n }) },
    migration: {
      holds: () => undefined,
      adopt: async () => undefined,
      evacuateLive: async () => undefined,
      ...hooks,
    },
    world: {
      vm: (key) => vms.get(key),
      boundVms: () => [...vms.values()],
      offering: () => offering,
      template: () => diskTemplate,
      diskOffering: () => undefined,
      inMaintenance: () => options.maintenance === true,
      storageLimited: () => false,
      zone: () => ({ name: "z1" }),
      volumes: async (vm) => {
        const root = rootVolume(vm, {
          phase: "Attached",
          host: OWNER.host,
          pool: "local-h1",
          path: `/pool/root-${vm.metadata.uid}`,
        });
        return new Map([[root.metadata.name as string, root]]);
      },
      networks: async () => new Map([[network.metadata.name as string, network]]),
      snapshot: async () => undefined,
    },
  });
  const vm = preparedVm("web", { status: { state: "Running" } });
  vms.set("team-a/web", vm);
  const uid = vm.metadata.uid as string;
  const run = () => sync.sync("team-a/web", uid, log);
  return { hv, writes, vms, uid, run };
}

const arrived = (hv: FakeHypervisor, uid: string, from: string) => {
  hv.plant({
    vmUid: uid,
    uuid: uid,
    state: "running",
    owner: { cluster: CLUSTER, host: from },
    vm: { namespace: "team-a", name: "web" },
    disks: [{ path: `/pool/root-${uid}`, target: "vda" }],
    spec: {} as never,
  });
};

describe("the VM loop and live migration", () => {
  it("never starts again a guest that left by live migration while the migration is not over", async () => {
    const { hv, uid, run } = rig({ holds: () => "live migration m1 to h2 is under way" });
    await run();
    expect(hv.domains.has(uid)).toBe(false);
    expect(hv.calls).toEqual([]);
  });

  it("adopts the running guest that arrived: its mark becomes this host's and nothing is started", async () => {
    const adopted: string[] = [];
    const { hv, uid, run, vms } = rig({
      adopt: async (vm, domain: ObservedDomain) => {
        adopted.push(`${vm.metadata.name} from ${domain.owner?.host}`);
        return (await hv.adopt(uid)) as ObservedDomain;
      },
    });
    arrived(hv, uid, "h2");
    await run();
    expect(adopted).toEqual(["web from h2"]);
    expect(hv.domains.get(uid)).toMatchObject({ state: "running", owner: OWNER });
    expect(hv.calls.filter((c) => /^(define|start)/.test(c))).toEqual([]);
    expect(vms.get("team-a/web")?.status).toMatchObject({ state: "Running", host: OWNER.host });
  });

  it("leaves a guest another host marked alone when no migration brought it here", async () => {
    const { hv, uid, run, vms } = rig({});
    arrived(hv, uid, "h2");
    await run();
    expect(hv.domains.get(uid)?.owner?.host).toBe("h2");
    expect(hv.calls.filter((c) => /^(define|start|poweroff)/.test(c))).toEqual([]);
    const ready = vms.get("team-a/web")?.status?.conditions?.find((c) => c.type === "Ready");
    expect(ready?.reason).toBe("DomainOwnedElsewhere");
  });

  it("maintenance waits for the live move instead of stopping the guest, and stops it once that is off", async () => {
    let wait: string | undefined = "maintenance: web moves live";
    const { hv, uid, run } = rig({ evacuateLive: async () => wait }, { maintenance: true });
    arrived(hv, uid, OWNER.host);
    await run();
    expect(hv.domains.get(uid)?.state).toBe("running");
    wait = undefined; // the migration failed: the old way
    await run();
    expect(hv.calls.some((c) => c.startsWith("shutdown"))).toBe(true);
  });

  it("the fake moves a running guest to a peer with the source's mark, and refuses without one", async () => {
    const source = new FakeHypervisor(OWNER, "/pool");
    const target = new FakeHypervisor({ cluster: CLUSTER, host: "h2" }, "/pool");
    const uid = "00000000-0000-4000-8000-000000000042";
    arrived(source, uid, OWNER.host);
    await expect(source.migrate(uid, { uri: "fake://h2", owner: target.owner })).rejects.toMatchObject({
      reason: "MigrationUnsupported",
    });
    source.peers.set("fake://h2", target);
    await source.migrate(uid, { uri: "fake://h2", owner: target.owner });
    expect(source.domains.has(uid)).toBe(false);
    expect(target.domains.get(uid)).toMatchObject({ state: "running", owner: OWNER });
    expect(await source.remoteDomainState("fake://h2", uid)).toBe("running");
  });
});

import pino from "pino";
import { beforeEach, describe, expect, it } from "vitest";
import type { Template, Volume } from "../crds/index.ts";
import { networkPrefix } from "./network-xml.ts";
import { dataVolume, diskTemplate, hostStorage, OWNER, preparedVm } from "./testing/fixtures.ts";
import { VmSyncRig } from "./testing/vm-sync-rig.ts";

const log = pino({ level: "silent" });

describe("the VM reconcile loop, against the fake hypervisor", () => {
  let rig: VmSyncRig;
  beforeEach(() => {
    rig = new VmSyncRig();
  });

  it("starts a prepared VM with two writes (the VM's status and its root volume's), and a second pass writes nothing", async () => {
    const key = rig.put(preparedVm("web"));
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    expect(rig.hv.domains.get(uid)?.state).toBe("running");
    expect(rig.hv.domains.get(uid)?.owner).toEqual(OWNER);
    expect(rig.writes.writes).toEqual([`vm ${key}`, "volume team-a/web-root"]);
    expect(rig.vm(key).status).toMatchObject({ state: "Running", domainUUID: uid });
    expect(rig.writes.volumeStatuses.get("team-a/web-root")).toMatchObject({
      phase: "Attached",
      host: OWNER.host,
      path: `/pool/root-${uid}`,
      attachedTo: { virtualMachine: "web", device: "vda" },
    });
    const [net] = rig.hv.networks.values();
    expect(net?.reservations).toEqual([{ mac: "52:54:00:00:00:01", ip: "10.20.0.10", name: "web" }]);
    expect(net?.spec.name.startsWith(networkPrefix(OWNER))).toBe(true);
    expect(rig.writes.events).toEqual([]); // a normal start is no Event
    const calls = rig.hv.calls.length;
    await rig.run(key, 2);
    expect(rig.writes.writes).toHaveLength(2);
    expect(rig.hv.calls).toHaveLength(calls);
  });

  it("never makes a disk again that was made once: a missing disk is a problem, the VM does not start empty", async () => {
    const key = rig.put(preparedVm("web", { spec: { dataVolumes: [{ name: "data", volume: "d1" }] } }));
    // The volume says its disk is in this host's pool; the file is gone (a lost disk, a wrong mount).
    rig.volumes.set(
      "d1",
      dataVolume("d1", {}, { phase: "Ready", host: OWNER.host, pool: "local-h1", path: "/pool/data-vol-d1" }),
    );
    await rig.run(key, 2);
    const uid = rig.vm(key).metadata.uid as string;
    expect(rig.hv.disks.has("data-vol-d1")).toBe(false);
    expect(rig.hv.domains.get(uid)).toBeUndefined();
    expect(rig.vm(key).status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "DiskMissing",
      message: expect.stringContaining("it is not recreated empty"),
    });
  });

  it("makes a new volume from a snapshot as a verified copy of the snapshot's file, and refuses an unready one", async () => {
    rig.hv.files.files.set("/secondary/snap.qcow2", {
      capacityBytes: 2n ** 30n,
      content: "from-the-snapshot",
    });
    const sha256 = (await import("node:crypto"))
      .createHash("sha256")
      .update("from-the-snapshot")
      .digest("hex");
    rig.snapshots.set("s1", {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VolumeSnapshot",
      metadata: { name: "s1", namespace: "team-a" },
      spec: { volume: "d0" },
      status: { phase: "Ready", path: "/secondary/snap.qcow2", sha256 },
    });
    rig.volumes.set("d1", dataVolume("d1", { source: { snapshot: "s1" } }));
    const key = rig.put(preparedVm("web", { spec: { dataVolumes: [{ name: "data", volume: "d1" }] } }));
    await rig.run(key);
    expect(rig.hv.content("/pool/data-vol-d1")).toBe("from-the-snapshot");
    expect(rig.vm(key).status?.state).toBe("Running");

    rig.volumes.set("d2", dataVolume("d2", { source: { snapshot: "missing" } }));
    const other = rig.put(preparedVm("db", { spec: { dataVolumes: [{ name: "data", volume: "d2" }] } }));
    await rig.run(other);
    expect(rig.hv.disks.has("data-vol-d2")).toBe(false);
    expect(rig.vm(other).status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      reason: "SnapshotNotReady",
    });
  });

  it("leaves a guest paused for a snapshot's copy alone, and resumes one an earlier run left paused", async () => {
    const key = rig.put(preparedVm("web"));
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    await rig.hv.pause(uid);
    rig.pausedForCopy.add(uid);
    await rig.run(key);
    expect(rig.hv.domains.get(uid)?.state).toBe("paused");
    rig.pausedForCopy.delete(uid);
    await rig.run(key);
    expect(rig.hv.domains.get(uid)?.state).toBe("running");
  });

  it("puts a volume's disk in the shared pool it lives in, and reports that pool once the disk is released here", async () => {
    rig.storage = hostStorage("/pool", { "shared-1": "/mnt/shared" });
    rig.sync = rig.newSync();
    await rig.hv.preparePool({ name: "shared-1", type: "sharedMountPoint", path: "/mnt/shared" });
    const disk = await rig.hv.ensureDisk({
      pool: "shared-1",
      name: "data-vol-d1",
      capacityBytes: 2n ** 30n,
      what: "d1",
      grow: false,
    });
    rig.volumes.set(
      "d1",
      dataVolume(
        "d1",
        {},
        { phase: "Ready", host: "h2", pool: "shared-1", poolType: "sharedMountPoint", path: disk.path },
      ),
    );
    const key = rig.put(preparedVm("web", { spec: { dataVolumes: [{ name: "data", volume: "d1" }] } }));
    const before = rig.hv.calls.length;
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    expect(rig.hv.domains.get(uid)?.disks).toContainEqual({ path: "/mnt/shared/data-vol-d1", target: "vdb" });
    // Host h2 holds it until the storage controller releases it to this host.
    expect(rig.writes.volumeStatuses.has("team-a/d1")).toBe(false);
    const held = rig.volumes.get("d1") as Volume;
    rig.volumes.set("d1", { ...held, status: { ...held.status, releasedTo: OWNER.host } });
    await rig.run(key);
    expect(rig.writes.volumeStatuses.get("team-a/d1")).toMatchObject({
      host: OWNER.host,
      pool: "shared-1",
      poolType: "sharedMountPoint",
      path: "/mnt/shared/data-vol-d1",
    });
    // The disk moved with nothing copied and nothing made: the same file, seen from this host.
    expect(rig.hv.calls.slice(before).filter((c) => c.startsWith("create disk data-vol-d1"))).toEqual([]);
  });

  it("adopts its running domains after a restart: no redefinition, no restart, no write", async () => {
    const key = rig.put(preparedVm("web"));
    await rig.run(key);
    const before = [...rig.hv.calls];
    rig.sync = rig.newSync(); // the agent restarted: nothing in memory
    await rig.run(key);
    expect(rig.hv.calls).toEqual(before);
    expect(rig.writes.writes).toHaveLength(2);
  });

  it("writes nothing and defines nothing while the orchestration has not prepared the VM", async () => {
    const vm = preparedVm("web", { status: { conditions: [] } });
    const key = rig.put(vm);
    await rig.run(key);
    expect(rig.hv.calls).toEqual([]);
    expect(rig.writes.writes).toEqual([]);
  });

  it("stops gracefully for Halted, and powers off a guest that ignores ACPI once the grace period is over", async () => {
    const key = rig.put(preparedVm("web"));
    await rig.run(key);
    rig.edit(key, { runStrategy: "Halted" });
    rig.hv.settings.guestIgnoresShutdown = true;
    expect(await rig.run(key)).toEqual({ requeueAfterMs: 2_000 });
    expect(rig.vm(key).status?.state).toBe("Stopping");
    rig.clock = 30_000;
    expect(await rig.run(key)).toEqual({ requeueAfterMs: 2_000 });
    rig.clock = 61_000;
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    expect(rig.hv.domains.get(uid)).toMatchObject({ state: "shutoff", shutoffReason: "destroyed" });
    expect(rig.vm(key).status?.state).toBe("Stopped");
    expect(rig.writes.events.map((e) => e.reason)).toEqual(["ForcedOff"]);
    expect(rig.hv.calls.filter((c) => c.startsWith("shutdown"))).toHaveLength(1);
    rig.edit(key, { runStrategy: "Always" });
    await rig.run(key);
    expect(rig.vm(key).status?.state).toBe("Running");
  });

  it("restarts a guest RerunOnFailure after a crash, not after it powered itself off", async () => {
    const key = rig.put(preparedVm("web", { spec: { runStrategy: "RerunOnFailure" } }));
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    rig.hv.guestStops(uid, "crashed");
    await rig.run(key);
    expect(rig.hv.domains.get(uid)?.state).toBe("running");
    rig.hv.guestStops(uid, "shutdown");
    await rig.run(key, 2);
    expect(rig.hv.domains.get(uid)?.state).toBe("shutoff");
    expect(rig.vm(key).status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      reason: "GuestShutdown",
    });
  });

  it("does not start a guest that is still shutting down itself; once off, RerunOnFailure leaves it off", async () => {
    const key = rig.put(preparedVm("web", { spec: { runStrategy: "RerunOnFailure" } }));
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    const domain = rig.hv.domains.get(uid);
    if (domain) domain.state = "shutdown"; // the guest's poweroff under way: libvirt's transitional state
    const starts = rig.hv.calls.filter((c) => c.startsWith("start")).length;
    expect(await rig.run(key)).toEqual({ requeueAfterMs: 1_000 });
    rig.hv.guestStops(uid, "shutdown");
    await rig.run(key, 2);
    expect(rig.hv.calls.filter((c) => c.startsWith("start"))).toHaveLength(starts);
    expect(rig.vm(key).status?.state).toBe("Stopped");
  });

  it("hot plugs a data volume into the running guest, grows it there, and unplugs it", async () => {
    const key = rig.put(preparedVm("web"));
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    rig.volumes.set("d1", dataVolume("d1"));
    rig.edit(key, { dataVolumes: [{ name: "logs", volume: "d1" }] });
    await rig.run(key);
    expect(rig.hv.domains.get(uid)?.disks).toContainEqual({ path: "/pool/data-vol-d1", target: "vdb" });
    expect(rig.writes.volumeStatuses.get("team-a/d1")).toMatchObject({
      attachedTo: { virtualMachine: "web", device: "vdb" },
    });
    rig.volumes.set(
      "d1",
      dataVolume(
        "d1",
        { size: "3Gi" },
        { host: OWNER.host, attachedTo: { virtualMachine: "web", device: "vdb" } },
      ),
    );
    await rig.run(key);
    expect(rig.hv.calls).toContain(`grow ${uid} vdb ${3n * 2n ** 30n}`);
    rig.edit(key, { dataVolumes: [] });
    await rig.run(key);
    expect(rig.hv.domains.get(uid)?.disks.map((d) => d.target)).toEqual(["vda"]);
    expect(rig.hv.disks.has("data-vol-d1")).toBe(true); // the volume's disk outlives the attachment
    expect(rig.writes.volumeStatuses.get("team-a/d1")).toMatchObject({ phase: "Ready" });
  });

  it("says so when the hypervisor cannot hot plug, and redefines the stopped domain instead", async () => {
    rig.hv.settings.hotPlug = false;
    const key = rig.put(preparedVm("web"));
    await rig.run(key);
    rig.volumes.set("d1", dataVolume("d1"));
    rig.edit(key, { dataVolumes: [{ name: "logs", volume: "d1" }] });
    await rig.run(key);
    expect(rig.vm(key).status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "HotPlugUnsupported",
    });
    rig.edit(key, { runStrategy: "Halted" });
    await rig.run(key);
    rig.edit(key, { runStrategy: "Always" });
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    expect(rig.hv.domains.get(uid)?.disks.map((d) => d.path)).toEqual([
      `/pool/root-${uid}`,
      "/pool/data-vol-d1",
    ]);
    expect(rig.vm(key).status?.state).toBe("Running");
  });

  it("reports a problem the user can fix on the Ready condition with one Warning, and keeps nothing half-done", async () => {
    rig.templates = [];
    const key = rig.put(preparedVm("web"));
    await rig.run(key, 2);
    expect(rig.vm(key).status).toMatchObject({ state: "Error" });
    expect(rig.vm(key).status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      reason: "TemplateNotFound",
    });
    expect(rig.writes.events.map((e) => e.reason)).toEqual(["TemplateNotFound"]);
    expect(rig.hv.domains.size).toBe(0);
  });

  it("keeps a VM whose template is not in the zone yet Pending, saying why on Ready, with no Warning; then starts it", async () => {
    const url: Template = { ...diskTemplate, spec: { source: { url: "http://images.example/t.qcow2" } } };
    rig.templates = [url];
    rig.zone = { name: "z1", secondaryPath: "/secondary" };
    rig.sync = rig.newSync();
    const key = rig.put(preparedVm("web"));
    await rig.run(key, 2);
    expect(rig.vm(key).status?.state).toBe("Pending");
    expect(rig.vm(key).status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "WaitingForTemplate",
      message:
        "Template disk-image waits for a Ready host of zone z1 to download it to the zone's secondary storage.",
    });
    expect(rig.writes.writes).toEqual([`vm ${key}`]); // said once
    expect(rig.writes.events).toEqual([]);
    expect(rig.hv.domains.size).toBe(0);
    rig.templates = [
      { ...url, status: { zones: [{ zone: "z1", host: "h2", state: "Ready", sha256: "d".repeat(64) }] } },
    ];
    await rig.run(key);
    expect(rig.vm(key).status?.state).toBe("Running");
  });

  it("releases a deleted VM: domain and root disk go, data disks stay, its network goes with its last VM, then the finalizer", async () => {
    rig.volumes.set("d1", dataVolume("d1"));
    const key = rig.put(preparedVm("web", { spec: { dataVolumes: [{ name: "logs", volume: "d1" }] } }));
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    rig.markDeleted(key);
    await rig.run(key);
    expect(rig.hv.domains.has(uid)).toBe(false);
    expect(rig.hv.disks.has(`root-${uid}`)).toBe(false);
    expect(rig.hv.disks.has("data-vol-d1")).toBe(true);
    expect(rig.hv.networks.size).toBe(0);
    expect(rig.writes.writes.at(-1)).toBe("finalizer virtualmachines/team-a/web");
  });

  it("evacuates for maintenance: stops, removes the domain, keeps every disk, and says where from", async () => {
    const key = rig.put(preparedVm("web"));
    await rig.run(key);
    const uid = rig.vm(key).metadata.uid as string;
    rig.maintenance = true;
    await rig.run(key);
    expect(rig.hv.domains.has(uid)).toBe(false);
    expect(rig.hv.disks.has(`root-${uid}`)).toBe(true);
    expect(rig.vm(key).status).toMatchObject({ state: "Stopped", evacuatedFrom: OWNER.host });
    expect(rig.writes.events.map((e) => e.reason)).toEqual(["Evacuated"]);
    const writes = rig.writes.writes.length;
    await rig.run(key);
    expect(rig.writes.writes).toHaveLength(writes);
  });

  it("powers off, but keeps, the domain of a VM bound to another host without this host letting go", async () => {
    const key = rig.put(preparedVm("web"));
    await rig.run(key);
    const vm = rig.vm(key);
    const uid = vm.metadata.uid as string;
    rig.put({ ...vm, status: { ...vm.status, host: "h2" } });
    await rig.sync.sync(key, uid, log);
    expect(rig.hv.domains.get(uid)).toMatchObject({ state: "shutoff" });
    expect(rig.hv.disks.has(`root-${uid}`)).toBe(true);
  });

  it("leaves a domain another agent defined alone, and says so", async () => {
    const vm = preparedVm("web");
    const uid = vm.metadata.uid as string;
    rig.hv.plant({
      vmUid: uid,
      uuid: uid,
      state: "running",
      owner: { cluster: "another-cluster", host: OWNER.host },
      disks: [],
      spec: {
        vm: { namespace: "team-a", name: "web", uid },
        type: "test",
        vcpus: 1,
        memoryBytes: 2n ** 28n,
        disks: [],
        nics: [],
      },
    });
    const key = rig.put(vm);
    await rig.run(key);
    expect(rig.hv.calls).toEqual([]);
    expect(rig.vm(key).status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      reason: "DomainOwnedElsewhere",
    });
  });
});

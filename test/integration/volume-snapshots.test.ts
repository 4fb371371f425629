// Storage's share of snapshots against the real API server and the real operator (storage only;
// no host agent runs, so no snapshot is ever taken and the test writes the volumes' agent status):
// a snapshot is bound to its volume's host, one of a missing volume says so, one deleted before
// any host took it goes away, and a SnapshotPolicy makes one snapshot per slot (also across a
// SIGKILL) and keeps the newest maxSnapshots.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SNAPSHOT_DATA_FINALIZER } from "../../crds/finalizers.ts";
import {
  Resources,
  SNAPSHOT_POLICY_LABEL,
  type SnapshotPolicy,
  type Volume,
  type VolumeSnapshot,
} from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import { type StratusProcess, startOperator } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor, waitUntilGone } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `snap-${suffix}`;
const HOST = `snap-h1-${suffix}`;
const typeMeta = <K extends string>(kind: K) => ({ apiVersion: "stratus.io/v1alpha1" as const, kind });

/** yyyymmddhhmm (UTC), as the policy names its snapshots. */
const stamp = (date: Date) => date.toISOString().replace(/[-:T]/g, "").slice(0, 12);

describe("volume snapshots and snapshot policies", () => {
  let client: KubeClient;
  let namespace: string;
  let kubeconfigPath: string;
  let operator: StratusProcess;

  const snapshot = (name: string) => client.get<VolumeSnapshot>(Resources.volumeSnapshots, name, namespace);
  const policy = (name: string) => client.get<SnapshotPolicy>(Resources.snapshotPolicies, name, namespace);
  const snapshotsOf = async (policyName: string) =>
    (
      await client.listAll<VolumeSnapshot>(Resources.volumeSnapshots, {
        namespace,
        labelSelector: `${SNAPSHOT_POLICY_LABEL}=${policyName}`,
      })
    ).items;
  const createSnapshot = (name: string, volume: string, labels?: Record<string, string>) =>
    client.create<VolumeSnapshot>(Resources.volumeSnapshots, {
      ...typeMeta("VolumeSnapshot"),
      metadata: { name, namespace, ...(labels ? { labels } : {}) },
      spec: { volume },
    });
  const createVolume = (name: string) =>
    client.create<Volume>(Resources.volumes, {
      ...typeMeta("Volume"),
      metadata: { name, namespace },
      spec: { zone: ZONE, size: "1Gi" },
    });
  const createPolicy = (name: string, volume: string, schedule: string, maxSnapshots: number) =>
    client.create<SnapshotPolicy>(Resources.snapshotPolicies, {
      ...typeMeta("SnapshotPolicy"),
      metadata: { name, namespace },
      spec: { volume, intervalType: "DAILY", schedule, timezone: "UTC", maxSnapshots },
    });
  const startStorage = () =>
    startOperator({
      kubeconfigPath,
      identity: `snap-${suffix}`,
      args: ["--components=storage", "--leader-elect=false"],
    });

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    kubeconfigPath = controlPlane.kubeconfigPath;
    namespace = await useNamespace(controlPlane.kubeConfig, "snap");
    // "disk" has a disk on HOST (written as its agent would); "blank" has none yet.
    await createVolume("disk");
    await client.apply(
      Resources.volumes,
      {
        metadata: { name: "disk", namespace },
        status: { phase: "Ready", host: HOST, pool: `local-${HOST}` },
      },
      { fieldManager: "test-agent", subresource: "status" },
    );
    await createVolume("blank");
    operator = await startStorage();
  });

  afterAll(async () => {
    await operator?.stop("SIGKILL");
    // Bound snapshots keep their data finalizer until an agent removes the file: none runs here.
    const left = await client
      .listAll<VolumeSnapshot>(Resources.volumeSnapshots, { namespace })
      .catch(() => undefined);
    for (const s of left?.items ?? [])
      await client
        .mergePatch(Resources.volumeSnapshots, s.metadata.name as string, namespace, {
          metadata: { finalizers: [] },
        })
        .catch(() => {});
    for (const v of ["disk", "blank"])
      await client
        .mergePatch(Resources.volumes, v, namespace, { metadata: { finalizers: [] } })
        .catch(() => {});
    await client?.close();
  });

  it("binds a snapshot to the host holding its volume's disk", async () => {
    const created = await createSnapshot("first", "disk");
    expect(created.metadata.finalizers).toContain(SNAPSHOT_DATA_FINALIZER);
    const bound = await waitFor("the snapshot bound", async () => {
      const s = await snapshot("first");
      return s.status?.host ? s : undefined;
    });
    expect(bound.status).toMatchObject({ host: HOST, zone: ZONE, volumeType: "DATADISK" });
    expect(bound.status?.conditions?.find((c) => c.type === "Bound")).toMatchObject({
      status: "True",
      reason: "Bound",
    });
  });

  it("says VolumeNotFound for a missing volume, and lets an unbound snapshot be deleted", async () => {
    await createSnapshot("orphan", "missing");
    const condition = await waitFor("Bound False", async () =>
      (await snapshot("orphan")).status?.conditions?.find((c) => c.type === "Bound"),
    );
    expect(condition).toMatchObject({ status: "False", reason: "VolumeNotFound" });
    expect((await snapshot("orphan")).status?.host).toBeUndefined();
    await client.delete(Resources.volumeSnapshots, "orphan", namespace);
    await waitUntilGone(client, Resources.volumeSnapshots, "orphan", namespace);
  });

  it("takes one snapshot for a slot that passed after the policy was made, also across a SIGKILL", async () => {
    // The next whole minute (two if it is close): a slot before the policy existed is not its own.
    const now = new Date();
    const slot = new Date(Math.ceil((now.getTime() + 10_000) / 60_000) * 60_000);
    const schedule = `${slot.getUTCMinutes()}:${slot.getUTCHours()}`;
    await createPolicy("daily", "disk", schedule, 3);
    const waiting = await waitFor(
      "the policy's next slot",
      async () => (await policy("daily")).status?.nextSlot,
    );
    expect(Date.parse(waiting)).toBe(slot.getTime());
    const taken = await waitFor(
      "the slot's snapshot",
      async () => {
        const all = await snapshotsOf("daily");
        return all.length > 0 ? all : undefined;
      },
      { timeoutMs: 100_000 },
    );
    expect(taken.map((s) => s.metadata.name)).toEqual([`daily-${stamp(slot)}`]);
    expect(taken[0]?.metadata.ownerReferences).toBeUndefined();
    const status = await waitFor("the policy's status", async () => {
      const p = await policy("daily");
      return p.status?.lastSlot ? p.status : undefined;
    });
    expect(Date.parse(status.lastSlot as string)).toBe(slot.getTime());
    expect(Date.parse(status.nextSlot as string)).toBe(slot.getTime() + 86_400_000);
    expect(status.snapshots).toBe(1);
    expect(status.conditions?.find((c) => c.type === "Ready")).toMatchObject({ status: "True" });

    await operator.stop("SIGKILL");
    operator = await startStorage();
    // A spec change the restarted operator must have seen: its generation in the status.
    const changed = await client.mergePatch<SnapshotPolicy>(Resources.snapshotPolicies, "daily", namespace, {
      spec: { maxSnapshots: 2 },
    });
    await waitFor(
      "the restarted operator to look at the policy",
      async () => (await policy("daily")).status?.observedGeneration === changed.metadata.generation,
    );
    expect((await snapshotsOf("daily")).map((s) => s.metadata.name)).toEqual([`daily-${stamp(slot)}`]);
  });

  it("keeps the newest maxSnapshots by slot and deletes the older ones", async () => {
    // The volume has no disk, so its snapshots are never bound and storage releases them when
    // deleted (no finalizers are removed by the test). Slots of the four days before today, made
    // newest first so that creation order says the opposite of the slots.
    const today = new Date();
    today.setUTCHours(0, 0, 0, 0);
    const names = [1, 2, 3, 4].map((days) => `keep-${stamp(new Date(today.getTime() - days * 86_400_000))}`);
    for (const name of names) await createSnapshot(name, "blank", { [SNAPSHOT_POLICY_LABEL]: "keep" });
    // An hour ago, daily: that slot passed before the policy existed, so it takes none now.
    const now = new Date();
    await createPolicy("keep", "blank", `${now.getUTCMinutes()}:${(now.getUTCHours() + 23) % 24}`, 3);
    await waitUntilGone(client, Resources.volumeSnapshots, names[3] as string, namespace);
    const left = await snapshotsOf("keep");
    expect(left.map((s) => s.metadata.name).sort()).toEqual(names.slice(0, 3).sort());
    await waitFor("the policy to count 3", async () => (await policy("keep")).status?.snapshots === 3);
    expect(
      (await snapshot(names[0] as string)).status?.conditions?.find((c) => c.type === "Bound"),
    ).toMatchObject({
      reason: "NoDiskYet",
    });
  });
});

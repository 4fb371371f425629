// Volume snapshots and snapshot policies through the CloudStack API, as a real process driven by
// the real Python `cs` client and hand-signed requests: a user snapshots a volume (an async job
// that ends when the snapshot is Ready), lists and deletes snapshots, reverts a volume (refused
// while its VM runs), makes a volume from a snapshot, and manages snapshot policies; another
// account sees none of it. No operator runs: where the agents and controllers would write status,
// the test writes it as the administrator. Users get the manifests' own stratus-cloud-user role.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import {
  REVERT_ANNOTATION,
  Resources,
  type SnapshotPolicy,
  type Volume,
  type VolumeSnapshot,
  type Zone,
} from "../../crds/index.ts";
import { KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import { type Account, hasCs, makeAccount, RBAC, cs as runCs, signedRequest } from "./cloudstack-accounts.ts";
import { logsOnFailure, type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `snap-zone-${suffix}`;
const now = () => new Date().toISOString().replace(/\.\d+Z$/, "Z");

type Row = Record<string, unknown>;

describe.skipIf(!hasCs)("volume snapshots through the CloudStack API (needs python3-cs)", () => {
  let client: KubeClient;
  let endpoint: string;
  let api: StratusProcess;
  let alice: Account;
  let bob: Account;
  let zoneId: string;
  let volumeId: string;
  let snapshotId: string;

  const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
    runCs(endpoint, account, command, args);
  const raw = (account: Account, params: Record<string, string>) => signedRequest(endpoint, account, params);
  const responseOf = (command: string, body: Record<string, Record<string, unknown>>) =>
    body[`${command.toLowerCase()}response`] ?? {};
  async function refused(account: Account, params: Record<string, string>) {
    const response = await raw(account, params);
    const body = responseOf(params.command as string, response.body);
    return { status: response.status, errorcode: body.errorcode, errortext: String(body.errortext) };
  }
  async function finishedJob(account: Account, jobid: string) {
    return waitFor(`job ${jobid} to finish`, async () => {
      const result = await raw(account, { command: "queryAsyncJobResult", jobid });
      const job = responseOf("queryAsyncJobResult", result.body);
      return job.jobstatus === 0 ? undefined : job;
    });
  }
  async function list(account: Account, command: string, itemKey: string, args: Record<string, string> = {}) {
    const listed = await cs(account, command, args);
    expect(listed.stderr).toBe("");
    return (listed.json[itemKey] ?? []) as Row[];
  }
  const patchStatus = (
    type: ResourceType,
    name: string,
    namespace: string,
    status: Record<string, unknown>,
  ) => client.mergePatch(type, name, namespace, { status }, "status");
  /** Deleted, and released as the agent would once the snapshot's file is gone. */
  async function deleteSnapshotObject(name: string) {
    await client.delete(Resources.volumeSnapshots, name, alice.namespace).catch(() => undefined);
    await releaseSnapshot(name);
  }
  const releaseSnapshot = (name: string) =>
    client
      .mergePatch(Resources.volumeSnapshots, name, alice.namespace, { metadata: { finalizers: null } })
      .catch(() => undefined);
  const ready = (message: string, status = "True") => ({
    type: "Ready",
    status,
    reason: status === "True" ? "Copied" : "CopyFailed",
    message,
    lastTransitionTime: now(),
  });

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "keys");
    // The manifests' own roles, under names of this run's.
    const manifests = parseAllDocuments(await readFile("manifests/base/rbac.yaml", "utf8")).map(
      (d) => d.toJSON() as KubeObject & { kind: string; rules: unknown[] },
    );
    const role = (name: string) => {
      const found = manifests.find((d) => d.kind === "ClusterRole" && d.metadata.name === name);
      expect(found, name).toBeDefined();
      return found as KubeObject & { rules: unknown[] };
    };
    for (const name of ["stratus-cloud-user", "stratus-catalog-reader"])
      await client.apply(
        RBAC("v1", "clusterroles"),
        { metadata: { name: `${name}-${suffix}` }, rules: role(name).rules },
        { fieldManager: "snapshot-api-test" },
      );
    const account = async (name: string) => {
      const made = await makeAccount(client, {
        keysNamespace,
        name,
        suffix,
        clusterRoles: [`stratus-catalog-reader-${suffix}`],
      });
      // The cloud user's role in its own namespace only.
      await client.apply(
        RBAC("v1", "rolebindings"),
        {
          metadata: { name: "stratus-cloud-user", namespace: made.namespace },
          roleRef: {
            apiGroup: "rbac.authorization.k8s.io",
            kind: "ClusterRole",
            name: `stratus-cloud-user-${suffix}`,
          },
          subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: made.user }],
        },
        { fieldManager: "snapshot-api-test" },
      );
      return made;
    };
    alice = await account("snap-alice");
    bob = await account("snap-bob");
    const zone = await client.create<Zone>(Resources.zones, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Zone",
      metadata: { name: ZONE },
      spec: {},
    });
    zoneId = zone.metadata.uid as string;

    // A data volume attached to a running VM, as the agents report them.
    await client.create(Resources.virtualMachines, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VirtualMachine",
      metadata: { name: "web", namespace: alice.namespace },
      spec: {
        zone: ZONE,
        serviceOffering: "small",
        template: "tiny",
        dataVolumes: [{ name: "data1", volume: "data-1" }],
      },
    });
    await patchStatus(Resources.virtualMachines, "web", alice.namespace, { state: "Running" });
    const volume = await client.create<Volume>(Resources.volumes, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Volume",
      metadata: { name: "data-1", namespace: alice.namespace },
      spec: { zone: ZONE, type: "DATADISK", size: "2Gi" },
    });
    volumeId = volume.metadata.uid as string;
    await patchStatus(Resources.volumes, "data-1", alice.namespace, {
      phase: "Attached",
      capacity: "2Gi",
      attachedTo: { virtualMachine: "web", device: "vdb" },
    });
    // A volume whose disk does not exist yet.
    await client.create(Resources.volumes, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Volume",
      metadata: { name: "pending", namespace: alice.namespace },
      spec: { zone: ZONE, type: "DATADISK", size: "1Gi" },
    });

    const started = await startApiServer({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      identity: `snap-api-${suffix}`,
      keysNamespace,
    });
    api = started.process;
    endpoint = started.endpoint;
    await waitFor("the volumes in the API's cache", async () => {
      const volumes = await list(alice, "listVolumes", "volume");
      return volumes.length === 2;
    });
  });

  logsOnFailure(() => [api]);

  afterAll(async () => {
    await api?.stop("SIGKILL");
    await client.delete(Resources.zones, ZONE).catch(() => undefined);
    await client?.close();
  });

  it("snapshots a volume: the job ends with the snapshot once the agent reports it Ready", async () => {
    // cs submits and waits for the job; the agent's report comes meanwhile.
    const created = cs(alice, "createSnapshot", { volumeid: volumeId, name: "Before-Upgrade" });
    const snapshot = await waitFor("the VolumeSnapshot", () =>
      client
        .get<VolumeSnapshot>(Resources.volumeSnapshots, "before-upgrade", alice.namespace)
        .catch(() => undefined),
    );
    expect(snapshot.spec).toEqual({ volume: "data-1" });
    snapshotId = snapshot.metadata.uid as string;
    await patchStatus(Resources.volumeSnapshots, "before-upgrade", alice.namespace, {
      phase: "Ready",
      zone: ZONE,
      volumeType: "DATADISK",
      size: "300Mi",
      virtualSize: "2Gi",
      takenAt: now(),
      conditions: [ready("the copy is on secondary storage")],
    });
    const result = await created;
    expect(result.stderr).toBe("");
    expect(result.json.snapshot).toMatchObject({
      id: snapshotId,
      name: "before-upgrade",
      account: alice.namespace,
      volumeid: volumeId,
      volumename: "data-1",
      volumetype: "DATADISK",
      snapshottype: "MANUAL",
      intervaltype: "MANUAL",
      state: "BackedUp",
      physicalsize: 300 * 1024 ** 2,
      virtualsize: 2 * 1024 ** 3,
      zoneid: zoneId,
      revertable: true,
    });
  });

  it("names a snapshot after its volume and time, and fails the job with the agent's reason", async () => {
    const submitted = await raw(alice, { command: "createSnapshot", volumeid: volumeId });
    const { id, jobid } = responseOf("createSnapshot", submitted.body) as { id: string; jobid: string };
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    const [snapshot] = (
      await client.list<VolumeSnapshot>(Resources.volumeSnapshots, { namespace: alice.namespace })
    ).items.filter((s) => s.metadata.uid === id);
    expect(snapshot?.metadata.name).toMatch(/^data-1-\d{14}$/);
    await patchStatus(Resources.volumeSnapshots, snapshot?.metadata.name as string, alice.namespace, {
      phase: "Error",
      conditions: [ready("secondary storage of zone is full", "False")],
    });
    const job = await finishedJob(alice, jobid);
    expect(job).toMatchObject({
      jobstatus: 2,
      jobresultcode: 530,
      jobinstancetype: "Snapshot",
      jobinstanceid: id,
      jobresult: { errorcode: 530, errortext: "secondary storage of zone is full" },
    });
    const listed = await list(alice, "listSnapshots", "snapshot", { id });
    expect(listed[0]).toMatchObject({ state: "Error", revertable: false });
    await deleteSnapshotObject(snapshot?.metadata.name as string);
  });

  it("refuses bad input with 431", async () => {
    const [pending] = await list(alice, "listVolumes", "volume", { name: "pending" });
    expect(
      await refused(alice, { command: "createSnapshot", volumeid: pending?.id as string }),
    ).toMatchObject({
      status: 431,
      errortext: `VolumeId: ${pending?.id} is not in Ready state but Allocated. Cannot take snapshot.`,
    });
    expect(
      (await refused(alice, { command: "createSnapshot", volumeid: volumeId, name: "not a name" })).errortext,
    ).toContain("1 to 63 lower-case letters");
    expect((await refused(alice, { command: "createSnapshot" })).errortext).toBe(
      "Unable to execute API command createsnapshot due to missing parameter volumeid",
    );
    const unknown = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    expect((await refused(alice, { command: "deleteSnapshot", id: unknown })).errortext).toMatch(
      /^Invalid parameter id value=7c9e6679-7425-40de-944b-e07fc1f90ae7 due to incorrect long value format/,
    );
    expect((await refused(alice, { command: "listSnapshots", snapshottype: "TEMPLATE" })).status).toBe(431);
  });

  it("lists snapshots by volume, name, type and interval", async () => {
    // A recurring snapshot, as the policy controller would take it.
    await client.create(Resources.snapshotPolicies, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "SnapshotPolicy",
      metadata: { name: "data-1-hourly", namespace: alice.namespace },
      spec: { volume: "data-1", intervalType: "HOURLY", schedule: "15", maxSnapshots: 3 },
    });
    await client.create(Resources.volumeSnapshots, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VolumeSnapshot",
      metadata: {
        name: "data-1-hourly-1",
        namespace: alice.namespace,
        labels: { "stratus.io/snapshot-policy": "data-1-hourly" },
      },
      spec: { volume: "data-1" },
    });
    const names = async (args: Record<string, string>) =>
      (await list(alice, "listSnapshots", "snapshot", args)).map((s) => s.name);
    await waitFor("both snapshots listed", async () => (await names({ volumeid: volumeId })).length === 2);
    expect(await names({ name: "before-upgrade" })).toEqual(["before-upgrade"]);
    expect(await names({ snapshottype: "MANUAL" })).toEqual(["before-upgrade"]);
    expect(await names({ snapshottype: "RECURRING" })).toEqual(["data-1-hourly-1"]);
    expect(await names({ snapshottype: "hourly" })).toEqual(["data-1-hourly-1"]);
    expect(await names({ intervaltype: "HOURLY" })).toEqual(["data-1-hourly-1"]);
    expect(await names({ intervaltype: "DAILY" })).toEqual([]);
    expect(await names({ keyword: "upgr" })).toEqual(["before-upgrade"]);
    // Before the agent reports a zone, the volume's zone is the snapshot's.
    expect(await names({ zoneid: zoneId })).toEqual(["before-upgrade", "data-1-hourly-1"]);
    const [recurring] = await list(alice, "listSnapshots", "snapshot", { name: "data-1-hourly-1" });
    expect(recurring).toMatchObject({ snapshottype: "RECURRING", intervaltype: "HOURLY", state: "Creating" });
    await deleteSnapshotObject("data-1-hourly-1");
    await client.delete(Resources.snapshotPolicies, "data-1-hourly", alice.namespace);
  });

  it("reverts a volume only while its VM is stopped; the job ends when the agent reports it", async () => {
    const running = await refused(alice, { command: "revertSnapshot", id: snapshotId });
    expect(running).toMatchObject({ status: 431, errorcode: 431 });
    expect(running.errortext).toContain(
      "The VM the specified disk is attached to is not in the shutdown state.",
    );
    const before = await client.get<Volume>(Resources.volumes, "data-1", alice.namespace);
    expect(before.metadata.annotations?.[REVERT_ANNOTATION]).toBeUndefined();

    await patchStatus(Resources.virtualMachines, "web", alice.namespace, { state: "Stopped" });
    const submitted = await waitFor("the revert accepted once the VM is Stopped in the cache", async () => {
      const response = await raw(alice, { command: "revertSnapshot", id: snapshotId });
      return response.status === 200 ? response : undefined;
    });
    const { jobid } = responseOf("revertSnapshot", submitted.body) as { jobid: string };
    const volume = await client.get<Volume>(Resources.volumes, "data-1", alice.namespace);
    const request = volume.metadata.annotations?.[REVERT_ANNOTATION];
    expect(request).toBe(`before-upgrade/${jobid}`);
    const pending = responseOf(
      "queryAsyncJobResult",
      (await raw(alice, { command: "queryAsyncJobResult", jobid })).body,
    );
    expect(pending.jobstatus).toBe(0);
    // What the holding agent writes once the disk is back to the snapshot.
    await patchStatus(Resources.volumes, "data-1", alice.namespace, { revertedTo: request });
    const job = await finishedJob(alice, jobid);
    expect(job).toMatchObject({
      jobstatus: 1,
      jobresultcode: 0,
      jobinstancetype: "Snapshot",
      jobresult: { snapshot: { id: snapshotId, state: "BackedUp" } },
    });
  });

  it("makes a volume from a snapshot, at least the snapshot's size, in its zone", async () => {
    const made = await cs(alice, "createVolume", { snapshotid: snapshotId, name: "restored" });
    expect(made.stderr).toBe("");
    expect(made.json.volume).toMatchObject({ name: "restored", zoneid: zoneId });
    const volume = await client.get<Volume>(Resources.volumes, "restored", alice.namespace);
    expect(volume.spec).toMatchObject({ zone: ZONE, size: "2Gi", source: { snapshot: "before-upgrade" } });
    const bigger = await cs(alice, "createVolume", {
      snapshotid: snapshotId,
      name: "restored-big",
      size: "5",
    });
    expect(bigger.stderr).toBe("");
    expect((await client.get<Volume>(Resources.volumes, "restored-big", alice.namespace)).spec.size).toBe(
      "5Gi",
    );
    const small = await refused(alice, {
      command: "createVolume",
      snapshotid: snapshotId,
      name: "small",
      size: "1",
    });
    expect(small).toMatchObject({
      status: 431,
      errortext: "Invalid parameter size value=1: a volume from snapshot before-upgrade needs at least 2 GiB",
    });
    // Another account's snapshot is not the caller's to use: its id is unknown there.
    expect(
      (await refused(bob, { command: "createVolume", snapshotid: snapshotId, name: "stolen" })).status,
    ).toBe(431);
  });

  it("creates, updates, lists and deletes snapshot policies, and refuses bad ones with 431", async () => {
    const args = {
      volumeid: volumeId,
      intervaltype: "daily",
      schedule: "30:02",
      timezone: "Europe/Berlin",
      maxsnaps: "7",
    };
    const created = await cs(alice, "createSnapshotPolicy", args);
    expect(created.stderr).toBe("");
    expect(created.json.snapshotpolicy).toMatchObject({
      volumeid: volumeId,
      schedule: "30:02",
      intervaltype: 1,
      maxsnaps: 7,
      timezone: "Europe/Berlin",
      fordisplay: true,
    });
    const policyId = (created.json.snapshotpolicy as Row).id as string;
    const object = await client.get<SnapshotPolicy>(
      Resources.snapshotPolicies,
      "data-1-daily",
      alice.namespace,
    );
    expect(object.spec).toEqual({
      volume: "data-1",
      intervalType: "DAILY",
      schedule: "30:02",
      timezone: "Europe/Berlin",
      maxSnapshots: 7,
    });
    expect(object.metadata.uid).toBe(policyId);
    // One policy per volume and interval: asking again changes it.
    const again = await cs(alice, "createSnapshotPolicy", { ...args, schedule: "0:4", maxsnaps: "3" });
    expect(again.json.snapshotpolicy).toMatchObject({ id: policyId, schedule: "0:4", maxsnaps: 3 });
    const weekly = await cs(alice, "createSnapshotPolicy", {
      ...args,
      intervaltype: "WEEKLY",
      schedule: "0:3:1",
    });
    expect(weekly.json.snapshotpolicy).toMatchObject({ intervaltype: 2 });

    const bad = (change: Record<string, string>) =>
      refused(alice, { command: "createSnapshotPolicy", ...args, ...change });
    const schedule = await bad({ intervaltype: "HOURLY", schedule: "61" });
    expect(schedule.status).toBe(431);
    expect(schedule.errortext).toContain("Invalid schedule: 61 for interval type: HOURLY");
    expect(schedule.errortext).toContain("an HOURLY schedule is the minute, 0-59");
    expect((await bad({ intervaltype: "MONTHLY", schedule: "0:0:32" })).errortext).toContain("DD 1 to 31");
    expect((await bad({ schedule: "123456789" })).status).toBe(431);
    expect((await bad({ intervaltype: "yearly" })).errortext).toContain("Unsupported interval type yearly");
    expect((await bad({ timezone: "Mars/Olympus" })).errortext).toContain("not a known time zone");
    expect((await bad({ maxsnaps: "0" })).errortext).toBe("maxSnaps should be greater than 0");
    expect((await bad({ maxsnaps: "1000" })).errortext).toContain("maxSnaps exceeds limit: 100");
    expect((await bad({ maxsnaps: "many" })).status).toBe(431);
    const [pending] = await list(alice, "listVolumes", "volume", { name: "pending" });
    expect((await bad({ volumeid: pending?.id as string })).errortext).toContain("is not in Ready state");

    await waitFor(
      "both policies listed",
      async () =>
        (await list(alice, "listSnapshotPolicies", "snapshotpolicy", { volumeid: volumeId })).length === 2,
    );
    expect(
      (await list(alice, "listSnapshotPolicies", "snapshotpolicy", { id: policyId })).map((p) => p.schedule),
    ).toEqual(["0:4"]);

    // updateSnapshotPolicy: whether it is shown; its id never changes.
    const hidden = await cs(alice, "updateSnapshotPolicy", { id: policyId, fordisplay: "false" });
    expect(hidden.json.snapshotpolicy).toMatchObject({ id: policyId, fordisplay: false, schedule: "0:4" });
    await waitFor(
      "the hidden policy filtered",
      async () =>
        (await list(alice, "listSnapshotPolicies", "snapshotpolicy", { fordisplay: "false" })).length === 1,
    );
    const shown = await cs(alice, "updateSnapshotPolicy", { id: policyId, fordisplay: "true" });
    expect(shown.json.snapshotpolicy).toMatchObject({ fordisplay: true });
    expect(
      (await refused(alice, { command: "updateSnapshotPolicy", id: policyId, customid: "x" })).errortext,
    ).toContain("customid is not supported");
    expect(
      (await refused(bob, { command: "updateSnapshotPolicy", id: policyId, fordisplay: "false" })).status,
    ).toBe(431);

    // Bob sees none of Alice's policies and cannot delete them.
    expect(await list(bob, "listSnapshotPolicies", "snapshotpolicy", { listall: "true" })).toEqual([]);
    expect((await refused(bob, { command: "deleteSnapshotPolicies", id: policyId })).status).toBe(431);
    expect(await refused(bob, { command: "createSnapshotPolicy", ...args })).toMatchObject({ status: 431 });

    const weeklyId = (weekly.json.snapshotpolicy as Row).id as string;
    const deleted = await cs(alice, "deleteSnapshotPolicies", { ids: `${policyId},${weeklyId}` });
    expect(deleted.json).toEqual({ success: true });
    await waitFor(
      "the policies gone",
      async () => (await list(alice, "listSnapshotPolicies", "snapshotpolicy")).length === 0,
    );
    expect((await refused(alice, { command: "deleteSnapshotPolicies" })).errortext).toBe(
      "No policy id (or list of ids) specified.",
    );
  });

  it("shows another account none of the snapshots, and refuses it theirs", async () => {
    expect(await list(bob, "listSnapshots", "snapshot")).toEqual([]);
    expect(await list(bob, "listSnapshots", "snapshot", { listall: "true" })).toEqual([]);
    expect(await list(bob, "listSnapshots", "snapshot", { id: snapshotId })).toEqual([]);
    for (const params of [
      { command: "deleteSnapshot", id: snapshotId },
      { command: "revertSnapshot", id: snapshotId },
      { command: "createSnapshot", volumeid: volumeId },
    ])
      expect(await refused(bob, params), params.command).toMatchObject({ status: 431, errorcode: 431 });
    expect(await client.get(Resources.volumeSnapshots, "before-upgrade", alice.namespace)).toBeDefined();
  });

  it("deletes a snapshot: the job ends once the agent has removed it", async () => {
    const submitted = await raw(alice, { command: "deleteSnapshot", id: snapshotId });
    const { jobid } = responseOf("deleteSnapshot", submitted.body) as { jobid: string };
    expect(jobid).toMatch(/^[0-9a-f-]{36}$/);
    // Its file may be on secondary storage: until the agent removes it, the snapshot is Destroying.
    const [destroying] = await waitFor("the snapshot Destroying", async () => {
      const listed = await list(alice, "listSnapshots", "snapshot", { id: snapshotId });
      return listed[0]?.state === "Destroying" ? listed : undefined;
    });
    expect(destroying).toMatchObject({ id: snapshotId, revertable: false });
    const pending = responseOf(
      "queryAsyncJobResult",
      (await raw(alice, { command: "queryAsyncJobResult", jobid })).body,
    );
    expect(pending.jobstatus).toBe(0);
    await releaseSnapshot("before-upgrade");
    expect(await finishedJob(alice, jobid)).toMatchObject({
      jobstatus: 1,
      jobresult: { success: true },
      jobinstancetype: "Snapshot",
    });
    expect(
      await client.get(Resources.volumeSnapshots, "before-upgrade", alice.namespace).catch(() => "absent"),
    ).toBe("absent");
    expect(await list(alice, "listSnapshots", "snapshot")).toEqual([]);
  });
});

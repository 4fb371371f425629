// Snapshots kept in a zone's S3-compatible store (Zone spec.secondaryStorage.s3), against a real
// MinIO, the real operator and a host agent on libvirt's test driver that signs with its own
// credentials: a snapshot is uploaded (its sha256 kept as the object's metadata) and leaves no
// staging file; a volume made from it is the same bytes; an object changed in the store is refused
// by its checksum and no disk is made from it; deleting the snapshot removes the object; a bucket
// that does not exist fails the snapshot with the store's words.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type VirtualMachine, type Volume, type VolumeSnapshot } from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import { type Minio, startMinio } from "./minio.ts";
import { logsOnFailure, type StratusProcess, startHostAgent, startOperator } from "./processes.ts";
import {
  createdUid,
  serveTinyImage,
  sharedControlPlane,
  useNamespace,
  waitFor,
  waitUntilGone,
} from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `s3-zone-${suffix}`;
const HOST = `s3-h1-${suffix}`;
const OFFERING = `s3-small-${suffix}`;
const TEMPLATE = `s3-tiny-${suffix}`;
const BUCKET = `snapshots-${suffix}`;

describe("snapshots in a zone's S3-compatible store", () => {
  let client: KubeClient;
  let namespace: string;
  let workDir: string;
  let minio: Minio;
  const processes: StratusProcess[] = [];

  const volume = (name: string) => client.get<Volume>(Resources.volumes, name, namespace);
  const snapshot = (name: string) => client.get<VolumeSnapshot>(Resources.volumeSnapshots, name, namespace);
  const createVm = (name: string, dataVolume: string) =>
    client.create(Resources.virtualMachines, {
      metadata: { name, namespace },
      spec: {
        zone: ZONE,
        serviceOffering: OFFERING,
        template: TEMPLATE,
        dataVolumes: [{ name: "data", volume: dataVolume }],
      },
    });
  const createVolume = (name: string, spec: Partial<Volume["spec"]>) =>
    client.create(Resources.volumes, { metadata: { name, namespace }, spec: { zone: ZONE, ...spec } });
  const onHost = (name: string) =>
    waitFor(`volume ${name} to have its disk`, async () => {
      const found = await volume(name);
      return found.status?.host === HOST && found.status.path ? found : undefined;
    });
  const readyOrFailed = (name: string) =>
    waitFor(`snapshot ${name} taken or failed`, async () => {
      const found = await snapshot(name);
      return found.status?.phase === "Ready" || found.status?.phase === "Error" ? found : undefined;
    });
  const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
  const objectBytes = async (key: string) =>
    (
      await minio.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))
    ).Body?.transformToByteArray();

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "s3");
    workDir = await mkdtemp(join(tmpdir(), "stratus-s3-"));
    minio = await startMinio(join(workDir, "minio"));
    await minio.createBucket(BUCKET);
    const { url, checksum } = await serveTinyImage();
    await createdUid(client, Resources.zones, ZONE, {
      secondaryStorage: { s3: { endpoint: minio.endpoint, bucket: BUCKET } },
    });
    await createdUid(client, Resources.serviceOfferings, OFFERING, { cpu: 1, memory: "64Mi" });
    await createdUid(client, Resources.templates, TEMPLATE, { source: { url }, checksum });
    processes.push(
      await startOperator({
        kubeconfigPath: controlPlane.kubeconfigPath,
        identity: `s3-operator-${suffix}`,
        args: [`--lease-namespace=${namespace}`],
      }),
      await startHostAgent({
        kubeconfigPath: controlPlane.kubeconfigPath,
        hostName: HOST,
        zone: ZONE,
        leaseNamespace: namespace,
        workDir,
        env: minio.credentials,
      }),
    );
  });

  logsOnFailure(() => processes);

  afterAll(async () => {
    for (const process of processes) await process.stop();
    await minio?.stop();
    await client?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("uploads a snapshot with its checksum and no staging file left, and makes the same disk from it", async () => {
    await createVolume("data", { size: "1Gi" });
    await createVm("web", "data");
    await onHost("data");
    await client.create(Resources.volumeSnapshots, {
      metadata: { name: "snap", namespace },
      spec: { volume: "data" },
    });
    const taken = await readyOrFailed("snap");
    expect(taken.status).toMatchObject({
      phase: "Ready",
      object: {
        endpoint: minio.endpoint,
        bucket: BUCKET,
        key: `snapshots/${namespace}/${taken.metadata.uid}.qcow2`,
      },
      conditions: expect.arrayContaining([expect.objectContaining({ type: "Ready", reason: "BackedUp" })]),
    });
    expect(taken.status?.path).toBeUndefined();
    const key = taken.status?.object?.key as string;
    const head = await minio.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
    expect(head.Metadata?.sha256).toBe(taken.status?.sha256);
    const stored = (await objectBytes(key)) as Uint8Array;
    expect(sha256(stored)).toBe(taken.status?.sha256);
    // Nothing stays on the host on its way to the store.
    const staging = join(workDir, "cache", HOST, "snapshot-staging");
    expect(await readdir(staging)).toEqual([]);

    // Made from the fetched object, which the host checks against the recorded sha256 (below: a
    // changed object is refused), and removes once the disk is made.
    await createVolume("restored", { size: "1Gi", source: { snapshot: "snap" } });
    await createVm("web-restored", "restored");
    await onHost("restored");
    expect(await readdir(staging)).toEqual([]);
  });

  it("makes no disk from an object changed in the store: its checksum is not the one recorded", async () => {
    const taken = await snapshot("snap");
    const key = taken.status?.object?.key as string;
    await minio.client.send(
      new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: Buffer.from("not the snapshot") }),
    );
    await createVolume("tampered", { size: "1Gi", source: { snapshot: "snap" } });
    await createVm("web-tampered", "tampered");
    const refused = await waitFor("the VM to refuse the changed object", async () => {
      const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "web-tampered", namespace);
      const ready = vm.status?.conditions?.find((c) => c.type === "Ready");
      return ready?.reason === "SnapshotChecksumMismatch" ? ready : undefined;
    });
    expect(refused.message).toContain(`not the ${taken.status?.sha256} recorded when it was taken`);
    expect((await volume("tampered")).status?.host).toBeUndefined();
  });

  it("removes the object with the snapshot, and fails a snapshot into a missing bucket with the store's words", async () => {
    for (const vm of ["web-tampered", "web-restored"]) {
      await client.delete(Resources.virtualMachines, vm, namespace);
      await waitUntilGone(client, Resources.virtualMachines, vm, namespace);
    }
    for (const name of ["tampered", "restored"]) await client.delete(Resources.volumes, name, namespace);
    const key = (await snapshot("snap")).status?.object?.key as string;
    await client.delete(Resources.volumeSnapshots, "snap", namespace);
    await waitUntilGone(client, Resources.volumeSnapshots, "snap", namespace);
    const gone = await minio.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key })).then(
      () => "still there",
      (error: Error) => error.name,
    );
    expect(gone).toBe("NotFound");

    await client.mergePatch(Resources.zones, ZONE, undefined, {
      spec: { secondaryStorage: { s3: { endpoint: minio.endpoint, bucket: `missing-${suffix}` } } },
    });
    await client.create(Resources.volumeSnapshots, {
      metadata: { name: "nowhere", namespace },
      spec: { volume: "data" },
    });
    const failed = await readyOrFailed("nowhere");
    expect(failed.status?.phase).toBe("Error");
    expect(failed.status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      reason: "SnapshotStoreFailed",
      message: expect.stringContaining("NoSuchBucket"),
    });
    await client.delete(Resources.volumeSnapshots, "nowhere", namespace);
    await waitUntilGone(client, Resources.volumeSnapshots, "nowhere", namespace);
  });
});

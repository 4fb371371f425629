import { createHash } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { describe, expect, it } from "vitest";
import type { Template, Volume, VolumeSnapshot } from "../crds/index.ts";
import { secondaryImagePath } from "../crds/template-images.ts";
import { ApiError } from "../runtime/client.ts";
import { FakeHypervisor } from "./fake-hypervisor.ts";
import { NO_SNAPSHOT_STORE } from "./snapshot-sync.ts";
import { syncTemplate, type TemplateContext } from "./template-sync.ts";
import { CLUSTER, dataVolume } from "./testing/fixtures.ts";
import { MemoryWrites } from "./testing/memory-writes.ts";

const log = pino({ level: "silent" });

const template = (source: Template["spec"]["source"]): Template => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Template",
  metadata: { name: "golden", uid: "tmpl-1" },
  spec: { source },
});

async function rig(secondary: string) {
  const hv = new FakeHypervisor({ cluster: CLUSTER, host: "h1" }, "/h1/pool");
  const disk = await hv.ensureDisk({
    pool: "local-h1",
    name: "data-vol-d1",
    capacityBytes: 2n ** 30n,
    what: "d1",
    grow: false,
  });
  hv.write(disk.path, "golden-bytes");
  const volume: Volume = dataVolume(
    "d1",
    {},
    { phase: "Ready", host: "h1", pool: "local-h1", path: disk.path },
  );
  const writes = new MemoryWrites(new Map());
  const snapshots = new Map<string, VolumeSnapshot>();
  const context: TemplateContext = {
    host: "h1",
    hypervisor: hv,
    storage: { pathOf: (pool) => hv.pools.get(pool)?.path },
    writes,
    secondaryPath: () => secondary,
    ...NO_SNAPSHOT_STORE,
    localVolume: (namespace, name) => (namespace === "team-a" && name === "d1" ? volume : undefined),
    localSnapshot: (namespace, name) => snapshots.get(`${namespace}/${name}`),
    log,
  };
  return { hv, disk, writes, snapshots, context };
}

describe("templates made from a volume or a snapshot", () => {
  it("writes a stopped volume's image once on secondary storage, with its checksum", async () => {
    const { hv, writes, context } = await rig("/secondary");
    const golden = template({ volume: { namespace: "team-a", name: "d1" } });
    expect(await syncTemplate(golden, context)).toBeUndefined();
    const status = writes.templateImages.get("golden") as { image: Record<string, unknown> };
    const path = secondaryImagePath("/secondary", golden);
    expect(status.image).toMatchObject({
      zone: "z1",
      host: "h1",
      path,
      sha256: createHash("sha256").update("golden-bytes").digest("hex"),
    });
    expect(hv.content(path)).toBe("golden-bytes");
    // Written once: a template with an image is left alone.
    const done = { ...golden, status: { image: status.image } } as Template;
    writes.writes.length = 0;
    await syncTemplate(done, context);
    expect(writes.writes).toEqual([]);
  });

  it("removes the image it made when the template went meanwhile (storage knew of nothing to remove)", async () => {
    const { hv, writes, context } = await rig("/secondary");
    writes.templateImage = async () => {
      throw new ApiError(404, 'templates.stratus.io "golden" not found', undefined);
    };
    const golden = template({ volume: { namespace: "team-a", name: "d1" } });
    expect(await syncTemplate(golden, context)).toBeUndefined();
    expect(hv.content(secondaryImagePath("/secondary", golden))).toBeUndefined();
  });

  it("waits while a running guest holds the volume, and leaves other hosts' sources alone", async () => {
    const { hv, disk, writes, context } = await rig("/secondary");
    await hv.define({
      vm: { namespace: "team-a", name: "vm", uid: "vm-1" },
      type: "test",
      vcpus: 1,
      memoryBytes: 2n ** 28n,
      disks: [{ path: disk.path, format: "qcow2", serial: "d1" }],
      consoleSocket: "/c.sock",
      nics: [],
    });
    await hv.start("vm-1");
    const golden = template({ volume: { namespace: "team-a", name: "d1" } });
    expect(await syncTemplate(golden, context)).toEqual({ requeueAfterMs: 5_000 });
    expect(
      await syncTemplate(template({ volume: { namespace: "team-b", name: "d1" } }), context),
    ).toBeUndefined();
    expect(writes.writes).toEqual([]);
  });

  it("copies a snapshot's file and checks it against the sum its agent recorded", async () => {
    const dir = await mkdtemp(join(tmpdir(), "template-sync-"));
    const { snapshots, writes, context } = await rig(join(dir, "secondary"));
    const file = join(dir, "snap.qcow2");
    await writeFile(file, "snapshot-bytes");
    const sha256 = createHash("sha256").update("snapshot-bytes").digest("hex");
    const snapshot = (sum: string): VolumeSnapshot => ({
      apiVersion: "stratus.io/v1alpha1",
      kind: "VolumeSnapshot",
      metadata: { name: "s1", namespace: "team-a" },
      spec: { volume: "d1" },
      status: { phase: "Ready", host: "h1", zone: "z1", path: file, sha256: sum },
    });
    const golden = template({ snapshot: { namespace: "team-a", name: "s1" } });
    snapshots.set("team-a/s1", snapshot("0".repeat(64)));
    expect(await syncTemplate(golden, context)).toEqual({ requeueAfterMs: 30_000 });
    expect(writes.templateImages.get("golden")).toMatchObject({
      conditions: [{ type: "Ready", status: "False", reason: "ChecksumMismatch" }],
    });
    snapshots.set("team-a/s1", snapshot(sha256));
    await syncTemplate(golden, context);
    const image = (writes.templateImages.get("golden") as { image: { path: string; sha256: string } }).image;
    expect(image.sha256).toBe(sha256);
    expect(await readFile(image.path, "utf8")).toBe("snapshot-bytes");
  });
});

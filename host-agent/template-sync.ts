// Templates made from a volume or a snapshot (CloudStack's createTemplate): the agent holding the
// source writes its image once, flattened, onto the zone's secondary storage with its sha256 in
// status.image; every host then copies it into its cache like any image, checking that sum. A
// volume's disk is read only while no running guest holds it; a snapshot's file is copied and
// checked against the sum its agent recorded. Nothing is written for a source this host does not hold.
import type { Logger } from "pino";
import type { Template, Volume, VolumeSnapshot } from "../crds/index.ts";
import { secondaryImagePath } from "../crds/template-images.ts";
import { isNotFound } from "../runtime/client.ts";
import type { AgentWrites } from "./agent-writes.ts";
import { copyChecked } from "./disk-files.ts";
import type { Hypervisor, StagedDisk } from "./hypervisor.ts";
import type { PoolSync } from "./pool-sync.ts";
import { HostProblem } from "./problem.ts";
import { type SnapshotAccess, snapshotCopy } from "./snapshot-sync.ts";
import { diskNameOf } from "./volume-sync.ts";

export interface TemplateContext extends SnapshotAccess {
  host: string;
  hypervisor: Hypervisor;
  storage: Pick<PoolSync, "pathOf">;
  writes: AgentWrites;
  secondaryPath(zone: string): string | undefined;
  /** A volume whose disk is on this host (from the agent's cache). */
  localVolume(namespace: string, name: string): Volume | undefined;
  /** A snapshot this host took (from the agent's cache). */
  localSnapshot(namespace: string, name: string): VolumeSnapshot | undefined;
  log: Logger;
}

type Source = { zone: string; what: string; copy: (target: string) => Promise<StagedDisk> };

/** What this host holds of the template's source, and how it copies it; undefined when nothing. */
async function sourceHere(
  template: Template,
  context: TemplateContext,
): Promise<Source | "busy" | undefined> {
  const { volume: fromVolume, snapshot: fromSnapshot } = template.spec.source;
  if (fromVolume) {
    const volume = context.localVolume(fromVolume.namespace, fromVolume.name);
    const pool = volume?.status?.pool;
    const disk = volume ? diskNameOf(volume) : undefined;
    if (!volume || volume.status?.host !== context.host || !pool || !disk || !context.storage.pathOf(pool))
      return undefined;
    if (volume.status?.transfer?.target) return "busy";
    const path = volume.status?.path;
    const running = (await context.hypervisor.listDomains()).find(
      (d) => d.state !== "shutoff" && d.disks.some((x) => x.path === path),
    );
    if (running) return "busy";
    return {
      zone: volume.spec.zone,
      what: `volume ${fromVolume.namespace}/${fromVolume.name}`,
      copy: (target) => context.hypervisor.exportDisk(pool, disk, target),
    };
  }
  if (fromSnapshot) {
    const snapshot = context.localSnapshot(fromSnapshot.namespace, fromSnapshot.name);
    const { phase, host, zone } = snapshot?.status ?? {};
    if (!snapshot || phase !== "Ready" || host !== context.host || !zone) return undefined;
    const what = `snapshot ${fromSnapshot.namespace}/${fromSnapshot.name}`;
    return {
      zone,
      what,
      // From the shared path, or fetched from the zone's store and checked first.
      copy: async (target) => {
        const copy = await snapshotCopy(snapshot, context);
        if (!copy) throw new HostProblem("SnapshotNotReady", `${what} has no copy to make the image from.`);
        try {
          return await copyChecked(copy.staged, target);
        } finally {
          await copy.release();
        }
      },
    };
  }
  return undefined;
}

const ready = (status: "True" | "False", reason: string, message: string) => ({
  type: "Ready",
  status,
  reason,
  message,
  lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
});

export async function syncTemplate(
  template: Template | undefined,
  context: TemplateContext,
): Promise<{ requeueAfterMs: number } | undefined> {
  if (!template || template.metadata.deletionTimestamp || template.status?.image) return undefined;
  const source = await sourceHere(template, context);
  if (!source) return undefined;
  const name = template.metadata.name as string;
  if (source === "busy") {
    context.log.info(
      { template: name },
      "the template's volume is in use or moving; its image is made once it stops",
    );
    return { requeueAfterMs: 5_000 };
  }
  const secondary = context.secondaryPath(source.zone);
  if (!secondary) {
    const message = `Zone ${source.zone} names no secondary storage (spec.secondaryStorage.path) to keep the image in.`;
    await context.writes.templateImage(name, { conditions: [ready("False", "NoSecondaryStorage", message)] });
    return { requeueAfterMs: 30_000 };
  }
  try {
    const image = await source.copy(secondaryImagePath(secondary, template));
    try {
      await context.writes.templateImage(name, {
        image: {
          zone: source.zone,
          host: context.host,
          path: image.path,
          sha256: image.sha256,
          bytes: image.bytes,
        },
        conditions: [ready("True", "ImageWritten", `Made from ${source.what} on host ${context.host}.`)],
      });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      // Deleted while the copy was made: storage knew of no image to remove, so this host does.
      await context.hypervisor.removeStaged(image.path);
      context.log.info(
        { template: name, path: image.path },
        "the template went while its image was made; removed it",
      );
      return undefined;
    }
    context.log.info({ template: name, path: image.path }, "template image written");
    return undefined;
  } catch (error) {
    if (!(error instanceof HostProblem)) throw error;
    await context.writes.templateImage(name, {
      conditions: [ready("False", error.reason, `${error.message} (host ${context.host})`)],
    });
    return { requeueAfterMs: 30_000 };
  }
}

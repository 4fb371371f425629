import { describe, expect, it } from "vitest";
import { TEMPLATE_IMAGES_FINALIZER } from "../../crds/finalizers.ts";
import type { Host, Template, Zone } from "../../crds/index.ts";
import type { ZoneImage } from "../../crds/template-images.ts";
import { decideTemplateZones, type TemplateZonesInput } from "./template-zones.ts";

const NOW = new Date("2026-01-01T00:00:00Z");

const zone = (name: string, secondary = true): Zone => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Zone",
  metadata: { name },
  spec: secondary ? { secondaryStorage: { path: `/secondary/${name}` } } : {},
});

const host = (name: string, zoneName: string, ready = true, maintenance = false): Host => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Host",
  metadata: { name },
  spec: { zone: zoneName, ...(maintenance ? { maintenance: true } : {}) },
  status: {
    conditions: [
      {
        type: "Ready",
        status: ready ? "True" : "False",
        reason: "r",
        message: "m",
        lastTransitionTime: "2026-01-01T00:00:00Z",
      },
    ],
  },
});

function template(
  options: {
    zones?: ZoneImage[];
    deleting?: boolean;
    source?: Template["spec"]["source"];
    offered?: string[];
  } = {},
): Template {
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Template",
    metadata: {
      name: "tiny",
      uid: "0b7c1c0e-0000-4000-8000-000000000001",
      generation: 1,
      resourceVersion: "7",
      finalizers: [TEMPLATE_IMAGES_FINALIZER],
      ...(options.deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}),
    },
    spec: {
      source: options.source ?? { url: "http://images.example/tiny.qcow2" },
      ...(options.offered ? { zones: options.offered } : {}),
    },
    ...(options.zones ? { status: { zones: options.zones } } : {}),
  };
}

const HOSTS: Record<string, Host[]> = {
  z1: [host("h1", "z1"), host("h2", "z1")],
  z2: [host("h3", "z2", false), host("h4", "z2", true, true)],
};

function decide(t: Template, overrides: Partial<TemplateZonesInput> = {}) {
  return decideTemplateZones({
    template: t,
    zones: [zone("z1"), zone("z2"), zone("plain", false)],
    hostsIn: (name) => HOSTS[name] ?? [],
    users: [],
    now: NOW,
    ...overrides,
  });
}

describe("decideTemplateZones", () => {
  it("gives a URL template one Ready host per zone with secondary storage, and none where no host can work", () => {
    const decision = decide(template());
    expect(decision.guarded).toBe(true);
    expect(decision.release).toBe(false);
    // z2's hosts are NotReady or in maintenance; "plain" keeps no images.
    expect(decision.status?.zones).toEqual([{ zone: "z1", host: expect.stringMatching(/^h[12]$/) }]);
    // The same choice on every run, so two replicas or a restart never pick differently.
    expect(decide(template()).status).toEqual(decision.status);
  });

  it("spreads templates over the zone's hosts", () => {
    const chosen = new Set(
      Array.from({ length: 16 }, (_, i) => {
        const t = template();
        t.metadata.uid = `0b7c1c0e-0000-4000-8000-0000000000${String(i).padStart(2, "0")}`;
        return decide(t).status?.zones[0]?.host;
      }),
    );
    expect(chosen).toEqual(new Set(["h1", "h2"]));
  });

  it("offers the template only in its zones", () => {
    expect(decide(template({ offered: ["z2"] })).status).toBeUndefined();
  });

  it("writes nothing when the template shows the choice already", () => {
    const decision = decide(
      template({ zones: [{ zone: "z1", host: "h2", state: "Downloading", bytes: 10 }] }),
    );
    expect(decision).toEqual({ guarded: false, release: false });
  });

  it("replaces a lost host while the download is unfinished, never once the image is Ready", () => {
    const lost = template({ zones: [{ zone: "z1", host: "gone", state: "Downloading" }] });
    expect(decide(lost)).toMatchObject({
      guarded: true,
      status: { zones: [{ zone: "z1", host: expect.stringMatching(/^h[12]$/) }] },
    });
    const ready = template({ zones: [{ zone: "z1", host: "gone", state: "Ready", sha256: "a".repeat(64) }] });
    expect(decide(ready)).toEqual({ guarded: false, release: false });
    // With no host able to work, the entry keeps its host: nothing better to say.
    const stuck = template({ zones: [{ zone: "z2", host: "h3", state: "Downloading" }], offered: ["z2"] });
    expect(decide(stuck)).toEqual({ guarded: false, release: false });
  });

  it("keeps a deleted template's images while VMs or volumes use it, and says who", () => {
    const t = template({ deleting: true, zones: [{ zone: "z1", host: "h1", state: "Ready" }] });
    const decision = decide(t, { users: ["a/web", "a/web-root"] });
    expect(decision.release).toBe(false);
    expect(decision.status?.zones).toEqual([{ zone: "z1", host: "h1" }]);
    expect(decision.status?.conditions).toEqual([
      expect.objectContaining({
        type: "InUse",
        status: "True",
        reason: "DeletionBlocked",
        message: "Deletion waits: a/web, a/web-root use the template (their disks are made from its image).",
      }),
    ]);
  });

  it("asks for removal once nothing uses it, and releases it when every zone's image is removed", () => {
    const t = template({ deleting: true, zones: [{ zone: "z1", host: "h1", state: "Ready" }] });
    const decision = decide(t);
    expect(decision.status?.zones).toEqual([{ zone: "z1", host: "h1", remove: true }]);
    expect(decision.status?.conditions?.[0]).toMatchObject({ type: "InUse", status: "False" });
    expect(decision.release).toBe(false);
    const removed = template({
      deleting: true,
      zones: [{ zone: "z1", host: "h1", remove: true, state: "Removed" }],
    });
    removed.status = { ...removed.status, conditions: decision.status?.conditions ?? [] };
    expect(decide(removed)).toEqual({ guarded: false, release: true });
  });

  it("has a lost host's removal done by another host of the zone", () => {
    const t = template({
      deleting: true,
      zones: [{ zone: "z1", host: "gone", remove: true, state: "Ready" }],
    });
    expect(decide(t)).toMatchObject({ guarded: true, status: { zones: [{ zone: "z1", remove: true }] } });
    expect(decide(t).status?.zones[0]?.host).not.toBe("gone");
  });

  it("releases at once a template that never had an image anywhere", () => {
    const inPlainZone = template({ deleting: true, offered: ["plain"] });
    inPlainZone.status = { conditions: decide(inPlainZone).status?.conditions ?? [] };
    expect(decide(inPlainZone)).toEqual({ guarded: false, release: true });
  });

  it("removes a volume template's image in its source's zone, and forgets zones that are gone", () => {
    const made = template({ deleting: true, source: { volume: { namespace: "a", name: "disk" } } });
    made.status = {
      image: {
        zone: "z1",
        host: "h9",
        path: "/secondary/z1/templates/x.qcow2",
        sha256: "b".repeat(64),
        bytes: 1,
      },
      zones: [{ zone: "vanished", host: "h7", state: "Ready" }],
    };
    const decision = decide(made);
    expect(decision.status?.zones).toEqual([
      { zone: "z1", host: expect.stringMatching(/^h[12]$/), remove: true },
    ]);
    expect(decision.release).toBe(false);
  });

  it("never releases a template without the finalizer", () => {
    const t = template({ deleting: true, offered: ["plain"] });
    t.metadata.finalizers = [];
    expect(decide(t).release).toBe(false);
  });
});

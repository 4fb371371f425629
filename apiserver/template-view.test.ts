import { describe, expect, it } from "vitest";
import type { Template, Zone } from "../crds/index.ts";
import type { ZoneImage } from "../crds/template-images.ts";
import { templateAvailability, templateView } from "./views.ts";

const zone = (secondary: boolean): Zone => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Zone",
  metadata: { name: "z1", uid: "2a9b0000-0000-4000-8000-000000000001" },
  spec: secondary ? { secondaryStorage: { path: "/secondary" } } : {},
});

const template = (entry?: ZoneImage, source: Template["spec"]["source"] = { url: "http://x/t.qcow2" }) =>
  ({
    apiVersion: "stratus.io/v1alpha1",
    kind: "Template",
    metadata: { name: "tiny", uid: "3c4d0000-0000-4000-8000-000000000001" },
    spec: { source },
    ...(entry ? { status: { zones: [entry] } } : {}),
  }) as Template;

describe("templateAvailability", () => {
  it("follows the zone's download as CloudStack words it", () => {
    const z = zone(true);
    expect(templateAvailability(template(), z)).toEqual({ ready: false, status: "Not Downloaded" });
    expect(
      templateAvailability(
        template({ zone: "z1", host: "h1", state: "Downloading", bytes: 420, totalBytes: 1000 }),
        z,
      ),
    ).toEqual({ ready: false, status: "42% Downloaded" });
    expect(templateAvailability(template({ zone: "z1", state: "Downloading", bytes: 5 }), z).status).toBe(
      "0% Downloaded",
    );
    expect(templateAvailability(template({ zone: "z1", state: "Ready", bytes: 1000 }), z)).toEqual({
      ready: true,
      size: 1000,
      status: "Download Complete",
    });
    const failed = { zone: "z1", state: "Error" as const, reason: "ChecksumMismatch", message: "wrong sum" };
    expect(templateAvailability(template(failed), z)).toEqual({ ready: false, status: "wrong sum" });
    expect(templateAvailability(template({ zone: "z1", state: "Ready", remove: true }), z).ready).toBe(false);
  });

  it("words a checksum mismatch as CloudStack's download does", () => {
    const [found, expected] = ["a".repeat(64), "0".repeat(64)];
    const mismatch = template({
      zone: "z1",
      state: "Error",
      reason: "ChecksumMismatch",
      message: `http://x/t.qcow2 has checksum sha256:${found}, the template expects sha256:${expected} (host h1)`,
    });
    mismatch.spec.checksum = `sha256:${expected}`;
    expect(templateAvailability(mismatch, zone(true))).toEqual({
      ready: false,
      status: `checksum "{SHA-256}${found}" didn't match the given value, "{SHA-256}${expected}"`,
    });
  });

  it("is ready where hosts fetch the image themselves: no secondary storage, host paths", () => {
    expect(templateAvailability(template(), zone(false)).ready).toBe(true);
    expect(templateAvailability(template(undefined, { hostPath: "/images/t.qcow2" }), zone(true)).ready).toBe(
      true,
    );
  });

  it("shows the zone's entry in listTemplates' fields", () => {
    const view = templateView(template({ zone: "z1", state: "Ready", bytes: 4096 }), zone(true)) as Record<
      string,
      unknown
    >;
    expect(view).toMatchObject({
      isready: true,
      status: "Download Complete",
      size: 4096,
      zoneid: "2a9b0000-0000-4000-8000-000000000001",
      zonename: "z1",
    });
  });
});

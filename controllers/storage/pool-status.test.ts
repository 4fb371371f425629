import { describe, expect, it } from "vitest";
import type { Host, StoragePool, Volume } from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { desiredPoolStatus, localPoolFor } from "./pool-status.ts";

const NOW = new Date("2026-01-01T00:00:00Z");
type Report = NonNullable<NonNullable<Host["status"]>["storagePools"]>[number];

const host = (name: string, reports: Report[], ready = true): Host => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Host",
  metadata: { name, uid: `uid-${name}` },
  spec: { zone: "z1" },
  status: {
    storagePools: reports,
    conditions: [
      { type: "Ready", status: ready ? "True" : "False", reason: "", message: "", lastTransitionTime: "" },
    ],
  },
});
const pool = (name: string, spec: Partial<StoragePool["spec"]>, deleting = false): StoragePool => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "StoragePool",
  metadata: { name, generation: 3, ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}) },
  spec: { zone: "z1", type: "nfs", path: "/mnt/nfs", nfs: { server: "nas", exportPath: "/e" }, ...spec },
});
const volume = (name: string, size: string, status: NonNullable<Volume["status"]>): Volume => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Volume",
  metadata: { name, namespace: "a" },
  spec: { zone: "z1", size },
  status,
});
const sizeOf = (v: Volume) => parseQuantity(v.spec.size as string);
const ready = (s: Record<string, unknown>) =>
  (s.conditions as { type: string; status: string; reason: string; message: string }[]).find(
    (c) => c.type === "Ready",
  );

describe("localPoolFor", () => {
  it("names the host's pool after it, in its zone", () => {
    expect(localPoolFor(host("h1", []))).toEqual({
      metadata: { name: "local-h1", labels: { "stratus.io/host": "h1" } },
      spec: { zone: "z1", type: "local", host: "h1" },
    });
  });
});

describe("desiredPoolStatus", () => {
  const nfs = pool("nfs", {});
  const hosts = [
    host("h1", [{ name: "nfs", ready: true, capacity: "100Gi", available: "60Gi" }]),
    host("h2", [{ name: "nfs", ready: true, capacity: "100Gi", available: "40Gi" }]),
    host("h3", [{ name: "nfs", ready: false, message: "mount timed out" }]),
    host("h4", [{ name: "nfs", ready: true, capacity: "1Gi", available: "1Gi" }], false),
  ];
  const volumes = [
    volume("a", "10Gi", { pool: "nfs" }),
    volume("b", "5Gi", { pool: "local-h1", transfer: { target: { pool: "nfs", host: "h2" } } }),
  ];

  it("rolls a shared pool up from its ready hosts (least seen) and its volumes", () => {
    const status = desiredPoolStatus(nfs, hosts, volumes, sizeOf, NOW);
    expect(status).toMatchObject({
      observedGeneration: 3,
      capacity: "100Gi",
      available: "40Gi",
      allocated: "15Gi", // the arriving volume's room is already taken
      volumes: 1,
      hosts: { total: 4, ready: 2 },
    });
    expect(ready(status)).toMatchObject({
      status: "False",
      reason: "NotReachable",
      message: "2/4 host(s) cannot use the pool: h3 (mount timed out), h4 (host not ready).",
    });
  });

  it("counts only its own host for a local pool", () => {
    const status = desiredPoolStatus(
      pool("local-h1", { type: "local", host: "h1" }),
      [host("h1", [{ name: "local-h1", ready: true, capacity: "50Gi" }]), host("h2", [])],
      [volumes[1] as Volume],
      sizeOf,
      NOW,
    );
    expect(status).toMatchObject({
      capacity: "50Gi",
      allocated: "5Gi",
      volumes: 1,
      hosts: { total: 1, ready: 1 },
    });
    expect(ready(status)).toMatchObject({ status: "True", reason: "Reachable" });
  });

  it("says no host reaches a pool of an empty zone", () => {
    expect(ready(desiredPoolStatus(nfs, [], [], sizeOf, NOW))).toMatchObject({
      status: "False",
      reason: "NoHosts",
    });
  });

  it("blocks its deletion while volumes are in it, saying how many", () => {
    const status = desiredPoolStatus(pool("nfs", {}, true), hosts, volumes, sizeOf, NOW);
    const blocked = (status.conditions as { type: string; message: string }[]).find(
      (c) => c.type === "DeletionBlocked",
    );
    expect(blocked?.message).toBe("1 volume(s) are still in the pool: a/a; delete or move them first.");
    const empty = desiredPoolStatus(pool("nfs", {}, true), hosts, [], sizeOf, NOW);
    expect((empty.conditions as { type: string }[]).map((c) => c.type)).toEqual(["Ready"]);
  });
});

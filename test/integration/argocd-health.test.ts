// The Argo CD health checks (manifests/argocd) run by a real Lua interpreter (Debian lua5.4) over
// a table of objects, and the kustomization that puts them into argocd-cm.
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { kubectl, run, sharedControlPlane } from "./support.ts";

const LUA = "/usr/bin/lua5.4";
const HEALTH = "manifests/argocd/health";

/** A JSON value as a Lua table constructor. */
function lua(value: unknown): string {
  if (value === null || value === undefined) return "nil";
  if (typeof value === "string") return JSON.stringify(value).replace(/\\u([0-9a-fA-F]{4})/g, "\\u{$1}");
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `{ ${value.map(lua).join(", ")} }`;
  return `{ ${Object.entries(value as Record<string, unknown>)
    .map(([k, v]) => `[${JSON.stringify(k)}] = ${lua(v)}`)
    .join(", ")} }`;
}

const condition = (type: string, status: string, reason = "R", message = "m") => ({
  type,
  status,
  reason,
  message,
  lastTransitionTime: "2026-11-25T10:00:00Z",
});
const vm = (
  spec: Record<string, unknown>,
  status?: Record<string, unknown>,
  metadata: Record<string, unknown> = {},
) => ({
  metadata: { name: "web", generation: 2, ...metadata },
  spec: { zone: "z1", serviceOffering: "small", template: "tiny", ...spec },
  ...(status ? { status: { observedGeneration: 2, ...status } } : {}),
});

const CASES: [string, string, unknown, string, RegExp?][] = [
  [
    "virtualmachine",
    "running",
    vm({}, { state: "Running", host: "h1", conditions: [condition("Ready", "True")] }),
    "Healthy",
    /h1/,
  ],
  [
    "virtualmachine",
    "halted and stopped",
    vm({ runStrategy: "Halted" }, { state: "Stopped", conditions: [condition("Ready", "True")] }),
    "Healthy",
  ],
  [
    "virtualmachine",
    "guest shut down under RerunOnFailure",
    vm(
      { runStrategy: "RerunOnFailure" },
      { state: "Stopped", conditions: [condition("Ready", "True", "GuestShutdown")] },
    ),
    "Healthy",
  ],
  [
    "virtualmachine",
    "error",
    vm(
      {},
      { state: "Error", conditions: [condition("Ready", "False", "DownloadFailed", "cannot download")] },
    ),
    "Degraded",
    /cannot download/,
  ],
  [
    "virtualmachine",
    "fits nowhere",
    vm(
      {},
      {
        conditions: [condition("Scheduled", "False", "Unschedulable", "0/5 hosts: 5 insufficient memory")],
      },
    ),
    "Degraded",
    /insufficient memory/,
  ],
  [
    "virtualmachine",
    "host lost",
    vm({}, { state: "Unknown", conditions: [condition("Ready", "Unknown", "HostNotReady")] }),
    "Unknown",
  ],
  [
    "virtualmachine",
    "host lost (HostReady False from fabric)",
    vm(
      {},
      {
        state: "Running",
        host: "h1",
        conditions: [condition("HostReady", "False", "HostNotReady", "Host h1 is not ready")],
      },
    ),
    "Unknown",
    /Host h1 is not ready/,
  ],
  [
    "virtualmachine",
    "Halted and never placed",
    vm({ runStrategy: "Halted" }, { conditions: [condition("Scheduled", "False", "Halted")] }),
    "Healthy",
  ],
  [
    "virtualmachine",
    "spec not acted on yet",
    vm({}, { state: "Running", observedGeneration: 1, conditions: [condition("Ready", "True")] }),
    "Progressing",
  ],
  ["virtualmachine", "starting", vm({}, { state: "Starting" }), "Progressing", /Starting/],
  ["virtualmachine", "stopped but should run", vm({}, { state: "Stopped" }), "Progressing"],
  ["virtualmachine", "no status yet", vm({}), "Progressing"],
  [
    "virtualmachine",
    "deleting",
    vm({}, { state: "Running" }, { deletionTimestamp: "2026-11-25T10:00:00Z" }),
    "Progressing",
    /Deleting/,
  ],
  ["volume", "attached", { metadata: {}, spec: {}, status: { phase: "Attached" } }, "Healthy"],
  ["volume", "pending", { metadata: {}, spec: {}, status: { phase: "Pending" } }, "Progressing"],
  ["volume", "error", { metadata: {}, spec: {}, status: { phase: "Error" } }, "Degraded"],
  [
    "network",
    "ready",
    {
      metadata: {},
      spec: {},
      status: { conditions: [condition("Ready", "True", "SegmentAllocated", "VLAN 100.")] },
    },
    "Healthy",
    /VLAN 100/,
  ],
  [
    "network",
    "no VLAN left",
    {
      metadata: {},
      spec: {},
      status: { conditions: [condition("Ready", "False", "VlansExhausted", "every VLAN")] },
    },
    "Degraded",
  ],
  [
    "network",
    "deletion waits",
    {
      metadata: { deletionTimestamp: "x" },
      spec: {},
      status: { conditions: [condition("InUse", "True", "DeletionBlocked", "Deletion waits: VMs a")] },
    },
    "Progressing",
    /VMs a/,
  ],
  [
    "host",
    "ready",
    {
      metadata: {},
      spec: {},
      status: { resourceState: "Enabled", conditions: [condition("Ready", "True")] },
    },
    "Healthy",
  ],
  [
    "host",
    "maintenance",
    {
      metadata: {},
      spec: {},
      status: { resourceState: "Maintenance", conditions: [condition("Ready", "True")] },
    },
    "Suspended",
  ],
  [
    "host",
    "preparing",
    {
      metadata: {},
      spec: {},
      status: { resourceState: "PrepareForMaintenance", conditions: [condition("Ready", "True")] },
    },
    "Progressing",
  ],
  [
    "host",
    "error in maintenance",
    { metadata: {}, spec: {}, status: { resourceState: "ErrorInMaintenance" } },
    "Degraded",
  ],
  [
    "host",
    "agent lost",
    {
      metadata: {},
      spec: {},
      status: { conditions: [condition("Ready", "False", "HeartbeatExpired", "last renewed at T")] },
    },
    "Degraded",
    /last renewed/,
  ],
  ["host", "new", { metadata: {}, spec: {} }, "Progressing"],
];

describe.skipIf(!existsSync(LUA))("Argo CD health checks (needs lua5.4)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stratus-lua-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each(CASES)("%s, %s: %s", async (kind, name, object, status, message) => {
    const harness = join(dir, `${kind}-${name.replaceAll(/\W+/g, "-")}.lua`);
    await writeFile(
      harness,
      `obj = ${lua(object)}\nlocal hs = assert(loadfile(${JSON.stringify(join(process.cwd(), HEALTH, `${kind}.lua`))}))()\nprint(hs.status)\nprint(hs.message or "")\n`,
    );
    const result = await run(LUA, [harness]);
    expect(result.code, result.stderr).toBe(0);
    const [printedStatus, printedMessage = ""] = result.stdout.split("\n");
    expect(printedStatus).toBe(status);
    if (message) expect(printedMessage).toMatch(message);
  });

  it("are what the kustomization puts into argocd-cm", async () => {
    const { kubeconfigPath } = await sharedControlPlane();
    const built = await kubectl(kubeconfigPath, ["kustomize", "manifests/argocd"]);
    expect(built.code, built.stderr).toBe(0);
    const configMap = parse(built.stdout) as {
      metadata: { name: string; namespace: string };
      data: Record<string, string>;
    };
    expect(configMap.metadata).toMatchObject({ name: "argocd-cm", namespace: "argocd" });
    for (const [kind, file] of Object.entries({
      VirtualMachine: "virtualmachine",
      Volume: "volume",
      Network: "network",
      Host: "host",
    }))
      expect(configMap.data[`resource.customizations.health.stratus.io_${kind}`]).toBe(
        readFileSync(join(HEALTH, `${file}.lua`), "utf8"),
      );
  });
});

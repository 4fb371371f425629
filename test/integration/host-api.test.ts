// Hosts through the CloudStack API, as a real process driven by the real Python `cs` client: an
// administrator lists hosts with CloudStack's fields and states, declares a lost host degraded and
// cancels it, puts a host in maintenance and back (async jobs), and disables and tags one; an
// ordinary user gets CloudStack's permission error from Kubernetes' RBAC. No operator runs: where
// the fabric would write Host status, the test writes it.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Host, Resources, type Zone } from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import { type Account, adminAndUser, hasCs, cs as runCs, signedRequest } from "./cloudstack-accounts.ts";
import { logsOnFailure, type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `hosts-zone-${suffix}`;
const UP = `host-up-${suffix}`;
const LOST = `host-lost-${suffix}`;

type Row = Record<string, unknown>;

const ready = (up: boolean) => ({
  type: "Ready",
  status: up ? "True" : "False",
  reason: up ? "HeartbeatCurrent" : "HeartbeatExpired",
  message: "written by the test",
  lastTransitionTime: "2026-11-30T10:00:00Z",
});

describe.skipIf(!hasCs)("hosts through the CloudStack API (needs python3-cs)", () => {
  let client: KubeClient;
  let endpoint: string;
  let api: StratusProcess;
  let admin: Account;
  let user: Account;
  let zoneId: string;

  const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
    runCs(endpoint, account, command, args);
  async function refused(account: Account, params: Record<string, string>) {
    const response = await signedRequest(endpoint, account, params);
    const body = response.body[`${(params.command as string).toLowerCase()}response`] ?? {};
    return { status: response.status, errortext: String(body.errortext) };
  }
  /** What the fabric would write: readiness, resource state, capacity and allocation. */
  const hostStatus = (name: string, status: Record<string, unknown>) =>
    client.mergePatch(Resources.hosts, name, undefined, { status }, "status");
  const idOf = async (name: string) => (await client.get<Host>(Resources.hosts, name)).metadata.uid as string;
  const listed = async (args: Record<string, string> = {}) =>
    ((await cs(admin, "listHosts", { zoneid: zoneId, ...args })).json.host ?? []) as Row[];

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "keys");
    ({ admin, user } = await adminAndUser(client, { keysNamespace, suffix, prefix: "hosts" }));
    const zone = await client.create<Zone>(Resources.zones, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Zone",
      metadata: { name: ZONE },
      spec: {},
    });
    zoneId = zone.metadata.uid as string;
    for (const [name, up] of [
      [UP, true],
      [LOST, false],
    ] as const) {
      await client.create(Resources.hosts, { metadata: { name }, spec: { zone: ZONE, tags: ["ssd"] } });
      await hostStatus(name, {
        hypervisor: { type: "KVM", version: "8.0.0", libvirtVersion: "9.0.0", uri: "qemu:///system" },
        agentVersion: "0.2.0",
        capacity: { cpu: 8, memory: "16Gi", storage: "100Gi" },
        allocated: { cpu: 2, memory: "4Gi", virtualMachines: 2 },
        resourceState: "Enabled",
        conditions: [ready(up)],
      });
    }
    const started = await startApiServer({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      identity: `hosts-api-${suffix}`,
      keysNamespace,
    });
    api = started.process;
    endpoint = started.endpoint;
  });

  logsOnFailure(() => [api]);

  afterAll(async () => {
    await api?.stop("SIGKILL");
    for (const name of [UP, LOST]) await client.delete(Resources.hosts, name).catch(() => undefined);
    await client.delete(Resources.zones, ZONE).catch(() => undefined);
    await client?.close();
  });

  it("lists hosts with CloudStack's fields, states and filters", async () => {
    const hosts = await waitFor("both hosts listed", async () => {
      const rows = await listed();
      return rows.length === 2 ? rows : undefined;
    });
    expect(hosts.find((h) => h.name === UP)).toMatchObject({
      id: await idOf(UP),
      type: "Routing",
      state: "Up",
      resourcestate: "Enabled",
      hypervisor: "KVM",
      hypervisorversion: "8.0.0",
      zoneid: zoneId,
      zonename: ZONE,
      cpunumber: 8,
      cpuallocated: "25.00%",
      memorytotal: 16 * 1024 ** 3,
      memoryallocated: 4 * 1024 ** 3,
      hosttags: "ssd",
    });
    const lost = hosts.find((h) => h.name === LOST);
    expect(lost).toMatchObject({ state: "Disconnected", disconnected: expect.any(String) });
    expect((await listed({ state: "Up" })).map((h) => h.name)).toEqual([UP]);
    expect((await listed({ type: "SecondaryStorage" })).length).toBe(0);
    expect((await listed({ clusterid: "0e6c1d6e-0000-4000-8000-000000000000" })).length).toBe(0);
    const denied = await refused(user, { command: "listHosts" });
    expect(denied.status).toBe(531);
  });

  it("declares a lost host degraded and back through async jobs, and refuses a host that is Up", async () => {
    const upRefusal = await refused(admin, { command: "declareHostAsDegraded", id: await idOf(UP) });
    expect(upRefusal.status).toBe(431);
    expect(upRefusal.errortext).toContain("as 'Degraded' when host is in Up status");
    const id = await idOf(LOST);
    expect((await refused(user, { command: "declareHostAsDegraded", id })).status).toBe(531);
    expect((await client.get<Host>(Resources.hosts, LOST)).spec.degraded).toBe(false);

    const submitted = await signedRequest(endpoint, admin, { command: "declareHostAsDegraded", id });
    const jobid = submitted.body.declarehostasdegradedresponse?.jobid as string;
    expect(jobid).toEqual(expect.any(String));
    expect((await client.get<Host>(Resources.hosts, LOST)).spec.degraded).toBe(true);
    // The job waits for the fabric's resource state.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await cs(admin, "queryAsyncJobResult", { jobid })).json.jobstatus).toBe(0);
    await hostStatus(LOST, { resourceState: "Degraded" });
    const done = await waitFor("the job to finish", async () => {
      const result = await cs(admin, "queryAsyncJobResult", { jobid });
      return result.json.jobstatus === 1 ? result.json : undefined;
    });
    expect(done).toMatchObject({ jobresultcode: 0, jobresult: { host: { id, resourcestate: "Degraded" } } });
    expect((await refused(admin, { command: "declareHostAsDegraded", id })).errortext).toBe(
      `Host [id:${id}] was already marked as Degraded.`,
    );

    const cancelling = cs(admin, "cancelHostAsDegraded", { id });
    await waitFor(
      "degraded cleared",
      async () => (await client.get<Host>(Resources.hosts, LOST)).spec.degraded === false,
    );
    await hostStatus(LOST, { resourceState: "Enabled" });
    expect((await cancelling).json).toMatchObject({ host: { id, resourcestate: "Enabled" } });
    expect((await refused(admin, { command: "cancelHostAsDegraded", id })).errortext).toContain(
      "when host is in Enabled state",
    );
  });

  it("puts a host in maintenance and back, and disables and tags it", async () => {
    const id = await idOf(UP);
    const preparing = cs(admin, "prepareHostForMaintenance", { id });
    await waitFor(
      "maintenance asked",
      async () => (await client.get<Host>(Resources.hosts, UP)).spec.maintenance === true,
    );
    await hostStatus(UP, { resourceState: "PrepareForMaintenance" });
    expect((await preparing).json).toMatchObject({ host: { id, resourcestate: "PrepareForMaintenance" } });
    expect((await refused(admin, { command: "prepareHostForMaintenance", id })).errortext).toContain(
      "is already in PrepareForMaintenance state",
    );
    const cancelling = cs(admin, "cancelHostMaintenance", { id });
    await waitFor(
      "maintenance cancelled",
      async () => (await client.get<Host>(Resources.hosts, UP)).spec.maintenance === false,
    );
    await hostStatus(UP, { resourceState: "Enabled" });
    expect((await cancelling).json).toMatchObject({ host: { id, resourcestate: "Enabled" } });

    const updated = await cs(admin, "updateHost", { id, allocationstate: "Disable", hosttags: "ssd,gpu" });
    expect(updated.json).toMatchObject({ host: { id, hosttags: "ssd,gpu" } });
    expect((await client.get<Host>(Resources.hosts, UP)).spec).toMatchObject({
      allocationState: "Disabled",
      tags: ["ssd", "gpu"],
    });
    expect((await refused(admin, { command: "updateHost", id, allocationstate: "Maintain" })).errortext).toBe(
      "Invalid allocation state: Maintain, only Enable/Disable are allowed",
    );
    expect((await refused(admin, { command: "updateHost", id, url: "http://x" })).status).toBe(431);
    expect((await refused(user, { command: "updateHost", id, hosttags: "x" })).status).toBe(531);
  });
});

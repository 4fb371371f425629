// stratus-operator as a real process: the fabric roll-up, health and metrics endpoints, leader
// election between replicas, and convergence despite being killed at random moments. The tests of
// this file run one after another, so only one operator at a time reconciles the zones.
import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { desiredZoneStatus } from "../../controllers/fabric/zone-status.ts";
import { type Host, Resources, type Zone } from "../../crds/index.ts";
import type { LocalControlPlane } from "../../devcluster/controlplane.ts";
import { KubeClient } from "../../runtime/client.ts";
import { LEASE, type Lease } from "../../runtime/leader-election.ts";
import { kubeMicroTime } from "../../runtime/time.ts";
import { type StratusProcess, startOperator } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const TEST = "operator-test";

describe("stratus-operator", () => {
  let controlPlane: LocalControlPlane;
  let client: KubeClient;
  let leaseNamespace: string;
  const operators: StratusProcess[] = [];

  const run = async (identity: string, args: string[] = [], kubeconfigPath = controlPlane.kubeconfigPath) => {
    const operator = await startOperator({
      kubeconfigPath,
      identity,
      args: [`--lease-namespace=${leaseNamespace}`, ...args],
    });
    operators.push(operator);
    return operator;
  };

  async function createZone(name: string): Promise<void> {
    await client.create(Resources.zones, { metadata: { name, labels: { [TEST]: suffix } }, spec: {} });
  }

  async function setHost(
    name: string,
    zone: string,
    facts: { ready: boolean; cpu: number; memoryGi: number },
  ) {
    await client.apply(
      Resources.hosts,
      { metadata: { name, labels: { [TEST]: suffix } }, spec: { zone } },
      { fieldManager: "test-admin" },
    );
    await client.apply(
      Resources.hosts,
      { metadata: { name }, status: { capacity: { cpu: facts.cpu, memory: `${facts.memoryGi}Gi` } } },
      { fieldManager: "test-agent", subresource: "status" },
    );
    // Readiness is the fabric monitor's reading of the host's heartbeat Lease: current, or an hour old.
    await client.apply(
      LEASE,
      {
        metadata: { name: `host-${name}`, namespace: leaseNamespace, labels: { "stratus.io/host": name } },
        spec: {
          holderIdentity: name,
          leaseDurationSeconds: 600,
          renewTime: kubeMicroTime(new Date(Date.now() - (facts.ready ? 0 : 3_600_000))),
        },
      },
      { fieldManager: "test-agent" },
    );
  }

  /** True when every zone's status is what a clean run computes from the hosts as they are now. */
  async function zonesConverged(zoneNames: string[]): Promise<boolean> {
    const hosts = (await client.list<Host>(Resources.hosts, { labelSelector: `${TEST}=${suffix}` })).items;
    for (const name of zoneNames) {
      const zone = await client.get<Zone>(Resources.zones, name);
      const expected = desiredZoneStatus(
        zone,
        hosts.filter((h) => h.spec.zone === name),
      );
      const strip = (status: unknown) =>
        JSON.parse(
          JSON.stringify(status ?? {}).replace(/"lastTransitionTime":"[^"]*"/g, '"lastTransitionTime":""'),
        );
      if (!isDeepStrictEqual(strip(zone.status), strip(expected))) return false;
    }
    return true;
  }

  const leaseHolder = async () => {
    try {
      return (await client.get<Lease>(LEASE, "stratus-fabric", leaseNamespace)).spec.holderIdentity ?? "";
    } catch {
      return "";
    }
  };

  beforeAll(async () => {
    controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    leaseNamespace = await useNamespace(controlPlane.kubeConfig, "leases");
  });
  afterAll(async () => {
    for (const operator of operators) await operator.stop("SIGKILL");
    await client?.close();
  });

  it("rolls host readiness (from heartbeat Leases), capacity and allocation up into zone status", async () => {
    const zone = `zone-${suffix}`;
    await createZone(zone);
    await setHost(`h1-${suffix}`, zone, { ready: true, cpu: 8, memoryGi: 32 });
    await setHost(`h2-${suffix}`, zone, { ready: true, cpu: 16, memoryGi: 64 });
    await setHost(`h3-${suffix}`, zone, { ready: false, cpu: 4, memoryGi: 8 });
    const operator = await run("rollup");
    const status = await waitFor("the zone status", async () => {
      const z = await client.get<Zone>(Resources.zones, zone);
      // Readiness comes from each host's Lease, which the fabric monitor reads on its own time.
      return z.status?.hosts?.total === 3 && z.status.hosts.ready === 2 ? z.status : undefined;
    });
    expect(status).toMatchObject({
      hosts: { total: 3, ready: 2, schedulable: 2 },
      capacity: { cpu: 24, memory: "96Gi" },
      allocated: { cpu: 0, memory: "0" }, // no VMs placed on these hosts
      conditions: [{ type: "Ready", status: "True", reason: "HostsAvailable" }],
    });

    // A host going NotReady is reflected without restarting anything.
    await setHost(`h2-${suffix}`, zone, { ready: false, cpu: 16, memoryGi: 64 });
    await waitFor(
      "the zone to count one ready host",
      async () => (await client.get<Zone>(Resources.zones, zone)).status?.hosts?.ready === 1,
    );
    expect(await zonesConverged([zone])).toBe(true);

    const metrics = await operator.get("/metrics");
    for (const series of [
      'stratus_workqueue_depth{controller="fabric-zone-rollup"}',
      'stratus_workqueue_adds_total{controller="fabric-zone-rollup"}',
      "stratus_workqueue_queue_duration_seconds_bucket",
      "stratus_reconcile_duration_seconds_bucket",
      "stratus_reconcile_errors_total",
      'stratus_api_requests_total{verb="apply-status",resource="zones",code="200"}',
      'stratus_api_requests_total{verb="watch",resource="hosts",code="200"}',
      'stratus_leader{component="fabric"} 1',
      "process_resident_memory_bytes",
    ]) {
      expect(metrics.body, series).toContain(series);
    }
    expect((await operator.get("/healthz")).status).toBe(200);
    expect(await operator.get("/readyz")).toEqual({ status: 200, body: "ok\n" });
    expect(await operator.stop("SIGTERM")).toBe(0);
    expect(operator.logs()).toContain('"msg":"released the leader lease"');
    expect(operator.logs()).toMatch(/"key":"zone-[0-9a-f]+".*"msg":"zone status updated"/);
  });

  it("reports not ready while its API server is unreachable, and ready again after", async () => {
    const replica = await controlPlane.startApiServerReplica();
    try {
      const operator = await run("unreachable", ["--leader-elect=false"], replica.kubeconfigPath);
      await waitFor("ready", async () => (await operator.get("/readyz")).status === 200);
      await replica.stop();
      const notReady = await waitFor("not ready", async () => {
        const readyz = await operator.get("/readyz");
        return readyz.status === 503 ? readyz : undefined;
      });
      expect(notReady.body).toContain("[-] api-server: the API server does not answer");
      expect((await operator.get("/healthz")).status).toBe(200); // alive: restarting it would not help
      await replica.start();
      await waitFor("ready again", async () => (await operator.get("/readyz")).status === 200, {
        timeoutMs: 60_000,
      });
      await operator.stop();
    } finally {
      await replica.stop();
    }
  });

  it("fails over: a SIGKILLed leader is replaced within the lease duration, a SIGTERMed one in under 3 s", async () => {
    const first = await run("replica-a");
    const second = await run("replica-b");
    const leaderIdentity = await waitFor("a leader", async () => (await leaseHolder()) || undefined);
    const [leader, standby] = leaderIdentity === "replica-a" ? [first, second] : [second, first];

    await leader.stop("SIGKILL");
    const killedAt = Date.now();
    await waitFor("the standby to take over", async () => (await leaseHolder()) === standby.identity, {
      timeoutMs: 40_000,
      intervalMs: 100,
    }).catch((error: Error) => {
      throw new Error(`${error.message}\nstandby log:\n${standby.logs()}`);
    });
    const takeoverSeconds = (Date.now() - killedAt) / 1000;
    // The lease runs out 15 s after the standby last saw it renewed (renewals come every 2 s).
    expect(takeoverSeconds).toBeLessThanOrEqual(15 + 2 + 2);
    console.log(`SIGKILL failover: ${takeoverSeconds.toFixed(1)} s`);

    // The new leader works: a new zone and host are rolled up.
    const zone = `failover-${suffix}`;
    await createZone(zone);
    await setHost(`failover-h-${suffix}`, zone, { ready: true, cpu: 4, memoryGi: 8 });
    await waitFor("the new leader to reconcile", () => zonesConverged([zone]));

    const third = await run("replica-c");
    // Campaigning starts once its caches are synced (ready): then it retries every 2 s.
    await waitFor("the third replica to be ready", async () => (await third.get("/readyz")).status === 200);
    const terminatedAt = Date.now();
    expect(await standby.stop("SIGTERM")).toBe(0);
    await waitFor("the third replica to take over", async () => (await leaseHolder()) === third.identity, {
      intervalMs: 50,
    });
    const handoverSeconds = (Date.now() - terminatedAt) / 1000;
    expect(handoverSeconds).toBeLessThan(3);
    console.log(`SIGTERM handover: ${handoverSeconds.toFixed(2)} s`);
    await third.stop();
  });

  it("converges to the same state when killed at random moments during reconciles", async () => {
    const zones = [0, 1, 2].map((i) => `chaos-${i}-${suffix}`);
    for (const zone of zones) await createZone(zone);
    const facts = () => ({
      ready: Math.random() < 0.7,
      cpu: 4 + Math.floor(Math.random() * 60),
      memoryGi: 8 + Math.floor(Math.random() * 500),
    });
    for (let i = 0; i < 24; i++) await setHost(`chaos-h${i}-${suffix}`, zones[i % 3] as string, facts());

    // Hosts keep changing while operators are started and SIGKILLed, ten times over.
    let changing = true;
    const changes = (async () => {
      while (changing) {
        const i = Math.floor(Math.random() * 24);
        await setHost(`chaos-h${i}-${suffix}`, zones[i % 3] as string, facts());
      }
    })();
    let kills = 0;
    try {
      for (; kills < 10; kills++) {
        const operator = await run(`chaos-${kills}`, ["--leader-elect=false"]);
        await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 1500));
        await operator.stop("SIGKILL");
      }
    } finally {
      changing = false;
      await changes;
    }
    expect(kills).toBe(10);

    const final = await run("chaos-final", ["--leader-elect=false"]);
    await waitFor("every zone to match a clean run over the final hosts", () => zonesConverged(zones), {
      timeoutMs: 60_000,
    });
    await final.stop();
  });
});

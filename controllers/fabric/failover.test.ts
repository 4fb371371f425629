import { describe, expect, it } from "vitest";
import type { Host, VirtualMachine } from "../../crds/index.ts";
import type { Lease } from "../../runtime/leader-election.ts";
import { decideLostVm, type LostVmInput } from "./failover.ts";

const NOW = Date.parse("2026-11-30T10:00:00Z");
const GRACE_MS = 10_000;

const host = (ready: boolean, spec: Partial<Host["spec"]> = {}): Host => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "Host",
  metadata: { name: "h1" },
  spec: { zone: "z1", ...spec },
  status: {
    conditions: [
      {
        type: "Ready",
        status: ready ? "True" : "False",
        reason: ready ? "HeartbeatCurrent" : "HeartbeatExpired",
        message: "m",
        lastTransitionTime: "2026-11-30T09:00:00Z",
      },
    ],
  },
});

const lease = (secondsAgo: number): Lease => ({
  metadata: { name: "host-h1", namespace: "stratus-system" },
  spec: {
    holderIdentity: "h1",
    leaseDurationSeconds: 20,
    renewTime: new Date(NOW - secondsAgo * 1000).toISOString().replace("Z", "000Z"),
  },
});

const vm = (
  status: Partial<NonNullable<VirtualMachine["status"]>> = {},
  runStrategy = "Always",
): VirtualMachine =>
  ({
    apiVersion: "stratus.io/v1alpha1",
    kind: "VirtualMachine",
    metadata: { name: "web", namespace: "t1", uid: "u1", generation: 1 },
    spec: { zone: "z1", serviceOffering: "ha", template: "t", runStrategy },
    status: { host: "h1", state: "Running", ...status },
  }) as VirtualMachine;

const input = (overrides: Partial<LostVmInput> = {}): LostVmInput => ({
  vm: vm(),
  host: host(false),
  lease: lease(35),
  highAvailability: true,
  volumes: [{ name: "web-root", pool: "shared-1", poolType: "sharedMountPoint" }],
  graceMs: GRACE_MS,
  zone: { hosts: 4, settledReady: 3 },
  now: NOW,
  ...overrides,
});

describe("decideLostVm", () => {
  it("says nothing about a VM whose host is Ready", () => {
    const decision = decideLostVm(input({ host: host(true), lease: lease(1) }));
    expect(decision).toEqual({ conditional: false });
  });

  it("leaves a VM without HA on its lost host, Unknown, with the reason", () => {
    const decision = decideLostVm(input({ highAvailability: false }));
    expect(decision.hostReady).toMatchObject({ status: "False", reason: "HostNotReady" });
    expect(decision.hostReady?.message).toContain("not highly available");
    expect(decision.failover).toBeUndefined();
    expect(decision.conditional).toBe(false);
  });

  it("does not release an HA VM before the Lease has expired past the grace, and says when it will", () => {
    // 20 s Lease + 10 s grace: renewed 25 s ago, so 5 s to go.
    const decision = decideLostVm(input({ lease: lease(25) }));
    expect(decision.hostReady).toMatchObject({ reason: "FailoverPending" });
    expect(decision.failover).toBeUndefined();
    expect(decision.recheckAfterMs).toBe(5_000);
  });

  it("releases an HA VM once the Lease expired past the grace, on the version it read", () => {
    const decision = decideLostVm(input({ lease: lease(31) }));
    expect(decision.conditional).toBe(true);
    expect(decision.failover).toEqual({
      from: "h1",
      lostAt: new Date(NOW - 31_000).toISOString(),
      releasedAt: new Date(NOW).toISOString(),
    });
    expect(decision.hostReady).toMatchObject({ reason: "FailingOver" });
    expect(decision.event).toMatchObject({ type: "Warning", reason: "HostLost" });
  });

  it("waits while so much of the zone is lost that an outage is likelier than dead hosts", () => {
    const paused = decideLostVm(input({ lease: lease(300), zone: { hosts: 10, settledReady: 4 } }));
    expect(paused.failover).toBeUndefined();
    expect(paused.hostReady).toMatchObject({ reason: "FailoverPaused" });
    expect(paused.recheckAfterMs).toBeGreaterThan(0);
    // Nothing settled (every host lost, or just back from an outage): nothing moves.
    expect(
      decideLostVm(input({ lease: lease(300), zone: { hosts: 2, settledReady: 0 } })).failover,
    ).toBeUndefined();
    // One of two hosts lost is a host failure, and so is 5 of 10.
    expect(
      decideLostVm(input({ lease: lease(300), zone: { hosts: 2, settledReady: 1 } })).failover,
    ).toBeDefined();
    expect(
      decideLostVm(input({ lease: lease(300), zone: { hosts: 10, settledReady: 5 } })).failover,
    ).toBeDefined();
    // An administrator's word is not a guess: a degraded host's VMs go even then.
    const degraded = decideLostVm(
      input({ host: host(false, { degraded: true }), zone: { hosts: 10, settledReady: 0 } }),
    );
    expect(degraded.failover).toBeDefined();
  });

  it("never releases a VM whose disk is on a pool local to the lost host", () => {
    const decision = decideLostVm(
      input({ volumes: [{ name: "web-root", pool: "local-h1", poolType: "local" }], lease: lease(300) }),
    );
    expect(decision.hostReady).toMatchObject({ reason: "FailoverBlocked" });
    expect(decision.hostReady?.message).toContain("volume web-root is on local-h1");
    expect(decision.failover).toBeUndefined();
  });

  it("releases any VM of a host an administrator declared degraded at once, HA or not, local disks excepted", () => {
    const degraded = host(false, { degraded: true });
    const decision = decideLostVm(input({ host: degraded, highAvailability: false, lease: lease(21) }));
    expect(decision.failover).toMatchObject({ from: "h1", releasedAt: new Date(NOW).toISOString() });
    expect(decision.conditional).toBe(true);
    expect(decision.event?.reason).toBe("HostDegraded");
    const local = decideLostVm(
      input({ host: degraded, volumes: [{ name: "web-root", pool: "local-h1", poolType: "local" }] }),
    );
    expect(local.failover).toBeUndefined();
    expect(local.hostReady?.reason).toBe("FailoverBlocked");
    // Declared degraded while it is Ready: nothing moves (CloudStack refuses the declaration then).
    expect(decideLostVm(input({ host: host(true, { degraded: true }), lease: lease(1) }))).toEqual({
      conditional: false,
    });
  });

  it("does not release a halted VM, nor one whose host never renewed a heartbeat", () => {
    expect(decideLostVm(input({ vm: vm({}, "Halted") })).failover).toBeUndefined();
    const never = decideLostVm(input({ lease: undefined }));
    expect(never.failover).toBeUndefined();
    expect(never.hostReady).toMatchObject({ reason: "FailoverPending" });
  });

  it("keeps a released VM released while it waits for a new host, without writing again", () => {
    const failover = {
      from: "h1",
      lostAt: "2026-11-30T09:59:20.000Z",
      releasedAt: "2026-11-30T09:59:50.000Z",
    };
    const decision = decideLostVm(input({ vm: vm({ failover }) }));
    expect(decision.failover).toBe(failover);
    expect(decision.conditional).toBe(false);
    expect(decision.event).toBeUndefined();
  });

  it("records the restart once the VM runs on its new host, with the time since the last heartbeat", () => {
    const failover = {
      from: "h1",
      lostAt: "2026-11-30T09:59:00.000Z",
      releasedAt: "2026-11-30T09:59:35.000Z",
    };
    const starting = decideLostVm(
      input({ vm: vm({ host: "h2", state: "Starting", failover }), host: host(true) }),
    );
    expect(starting.failover).toBe(failover);
    // "Running" written by the lost host's agent is not a restart: the new host's claim comes first.
    const stale = decideLostVm(input({ vm: vm({ host: "h2", failover }), host: host(true) }));
    expect(stale.failover).toBe(failover);
    const startClaim = { host: "h2", at: "2026-11-30T09:59:40.000Z" };
    const running = decideLostVm(input({ vm: vm({ host: "h2", failover, startClaim }), host: host(true) }));
    expect(running.failover).toEqual({
      ...failover,
      restartedOn: "h2",
      restartedAt: new Date(NOW).toISOString(),
      downtimeSeconds: 60,
    });
    expect(running.event?.note).toBe(
      "Restarted on h2 after 60 s (host h1 last renewed its heartbeat at 2026-11-30T09:59:00.000Z).",
    );
  });

  it("gives a released VM back to its host when no other host could take it and the host is back", () => {
    const failover = {
      from: "h1",
      lostAt: "2026-11-30T09:59:00.000Z",
      releasedAt: "2026-11-30T09:59:35.000Z",
    };
    const unschedulable = {
      type: "Scheduled",
      status: "False" as const,
      reason: "Unschedulable",
      message: "no host fits",
      lastTransitionTime: "2026-11-30T09:59:36Z",
    };
    const decision = decideLostVm(
      input({ vm: vm({ failover, conditions: [unschedulable] }), host: host(true), lease: lease(1) }),
    );
    expect(decision.failover).toBeUndefined();
    expect(decision.conditional).toBe(true);
    expect(decision.event?.reason).toBe("FailoverCancelled");
    // While another host may still take it, it stays released.
    expect(decideLostVm(input({ vm: vm({ failover }), host: host(true), lease: lease(1) })).failover).toBe(
      failover,
    );
  });
});

// Pure: what the fabric says and does about a VM whose host may be lost. Any VM on a host that is
// not Ready gets HostReady=False (its state is unknown). An HA VM is released to another host, by
// writing status.failover, only once the host's Lease has expired and the host grace has passed:
// by then the host's watchdog has powered the guest off (it fences a quarter of the Lease before
// expiry; see host-agent/fence-state.ts). Its restart elsewhere is recorded once it runs.
import {
  type Host,
  isReleasedByFailover as isReleased,
  type PoolType,
  type VirtualMachine,
} from "../../crds/index.ts";
import type { Condition, ConditionInput } from "../../runtime/conditions.ts";
import type { Lease } from "../../runtime/leader-election.ts";
import { heartbeatDeadline } from "./host-status.ts";

export type Failover = NonNullable<NonNullable<VirtualMachine["status"]>["failover"]>;

export interface LostVmInput {
  vm: VirtualMachine;
  /** The Host of status.host. */
  host: Host | undefined;
  /** Its heartbeat Lease. */
  lease: Lease | undefined;
  /** The VM's offering asks for HA. */
  highAvailability: boolean;
  /** The VM's volumes: where their disks are. */
  volumes: readonly { name: string; pool?: string; poolType?: PoolType }[];
  graceMs: number;
  /** The zone's hosts, and of them how many have been Ready for a whole Lease duration or more. */
  zone: { hosts: number; settledReady: number };
  now: number;
}

/**
 * Failover waits while so much of the zone is lost that a control-plane or network outage is
 * likelier than that many dead hosts (as Kubernetes stops evicting from a disrupted zone): no host
 * settled-Ready, or more than 55 % of a zone of three or more hosts not.
 */
export function zoneDisrupted(zone: LostVmInput["zone"]): boolean {
  if (zone.settledReady === 0) return true;
  return zone.hosts >= 3 && (zone.hosts - zone.settledReady) / zone.hosts > 0.55;
}

/** Hosts count as settled once Ready this long: agents back from an outage first get to renew. */
export const SETTLE_RETRY_MS = 2_000;

export interface LostVmDecision {
  /** The HostReady condition, or undefined for none. */
  hostReady?: ConditionInput;
  /** status.failover as it should be, or undefined for none. */
  failover?: Failover;
  /** The write changes who may run the VM: it must be made on the version that was read. */
  conditional: boolean;
  event?: { type: "Normal" | "Warning"; reason: string; note: string };
  recheckAfterMs?: number;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function decideLostVm(input: LostVmInput): LostVmDecision {
  const { vm, host, now } = input;
  const current = vm.status?.host;
  let failover = vm.status?.failover;
  let event: LostVmDecision["event"];
  if (failover && !failover.restartedOn && current && current !== failover.from) {
    // Running on the new host: its agent claimed the start after the release (so the state is its
    // own report, not what the lost host's agent wrote last).
    const claim = vm.status?.startClaim;
    const claimed = claim?.host === current && Date.parse(claim.at) >= Date.parse(failover.releasedAt);
    if (claimed && vm.status?.state === "Running") {
      const seconds = Math.max(0, Math.round((now - Date.parse(failover.lostAt)) / 1000));
      failover = { ...failover, restartedOn: current, restartedAt: iso(now), downtimeSeconds: seconds };
      event = {
        type: "Normal",
        reason: "Restarted",
        note: `Restarted on ${current} after ${seconds} s (host ${failover.from} last renewed its heartbeat at ${failover.lostAt}).`,
      };
    }
  }
  const ready = (host?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === "Ready");
  if (!host || !ready || ready.status === "True") {
    // Released, yet nowhere else could take it, and its host is back: it may run there again.
    if (failover && isReleased(vm) && unschedulable(vm) && host?.spec.degraded !== true)
      return { conditional: true, event: reclaimed(current as string) };
    return { conditional: false, ...(failover ? { failover } : {}), ...(event ? { event } : {}) };
  }
  const lost = (reason: string, message: string, extra: Partial<LostVmDecision> = {}): LostVmDecision => ({
    hostReady: {
      type: "HostReady",
      status: "False",
      reason,
      message: `Host ${current} is not ready (${ready.reason}: ${ready.message}); ${message}`,
    },
    conditional: false,
    ...(failover ? { failover } : {}),
    ...(event ? { event } : {}),
    ...extra,
  });
  // An administrator's word that nothing runs there any more lets any VM go at once.
  const degraded = host.spec.degraded === true;
  if (!input.highAvailability && !degraded)
    return lost(
      "HostNotReady",
      "the VM's state is unknown. Its offering is not highly available: it stays until the host returns or an administrator declares the host degraded.",
    );
  if (vm.spec.runStrategy === "Halted")
    return lost("HostNotReady", "the VM's state is unknown. It is halted, so it is not restarted elsewhere.");
  if (isReleased(vm))
    return lost(
      "FailingOver",
      `the VM was released at ${failover?.releasedAt} and is placed on another host.`,
    );
  const local = input.volumes.find((v) => v.poolType === "local");
  if (local)
    return lost(
      "FailoverBlocked",
      `the VM could restart elsewhere, but volume ${local.name} is on ${local.pool}, a pool local to the lost host: it cannot start anywhere else.`,
    );
  const renewed = input.lease?.spec.renewTime;
  if (!degraded) {
    const deadline = heartbeatDeadline(input.lease, input.graceMs);
    if (deadline === undefined || renewed === undefined)
      return lost(
        "FailoverPending",
        "the host never renewed a heartbeat: nothing says when its guests are fenced.",
      );
    if (now < deadline)
      return lost(
        "FailoverPending",
        `the VM is highly available: unless the host renews its heartbeat first, it restarts on another host from ${iso(deadline)} (its watchdog powers it off before that).`,
        { recheckAfterMs: deadline - now },
      );
  }
  if (!degraded && zoneDisrupted(input.zone))
    return lost(
      "FailoverPaused",
      `only ${input.zone.settledReady} of the zone's ${input.zone.hosts} hosts have been ready for a whole Lease: failover waits, since an outage of the control plane or the network is likelier than that many lost hosts.`,
      { recheckAfterMs: SETTLE_RETRY_MS },
    );
  const released: Failover = {
    from: current as string,
    lostAt: iso(renewed ? Date.parse(renewed) : now),
    releasedAt: iso(now),
  };
  return {
    ...lost("FailingOver", `the VM was released at ${released.releasedAt} and is placed on another host.`),
    failover: released,
    conditional: true,
    event: degraded
      ? {
          type: "Warning",
          reason: "HostDegraded",
          note: `An administrator declared host ${current} degraded (nothing runs there any more): the VM starts on another host.`,
        }
      : {
          type: "Warning",
          reason: "HostLost",
          note: `Host ${current} last renewed its heartbeat at ${released.lostAt} and its guests are fenced: the VM restarts on another host.`,
        },
  };
}

function unschedulable(vm: VirtualMachine): boolean {
  const scheduled = vm.status?.conditions?.find((c) => c.type === "Scheduled");
  return scheduled?.status === "False" && scheduled.reason === "Unschedulable";
}

function reclaimed(host: string): NonNullable<LostVmDecision["event"]> {
  return {
    type: "Normal",
    reason: "FailoverCancelled",
    note: `No other host could take the VM and host ${host} is ready again: it runs there again.`,
  };
}

// Pure: what a Zone's status should say, given the zone and its hosts.
import type { Host, Zone } from "../../crds/index.ts";
import { formatQuantity, parseQuantity } from "../../crds/quantity.ts";
import {
  type Condition,
  type ConditionInput,
  isConditionTrue,
  setCondition,
} from "../../runtime/conditions.ts";

/** States in which a host takes no new VMs, whatever its spec says. */
export const MAINTENANCE_STATES: ReadonlySet<string> = new Set([
  "PrepareForMaintenance",
  "Maintenance",
  "ErrorInMaintenance",
]);

export function isHostReady(host: Host): boolean {
  return isConditionTrue(host.status?.conditions as Condition[] | undefined, "Ready");
}

/** Ready, enabled, not in maintenance and not marked unschedulable by a controller. */
export function isHostSchedulable(host: Host): boolean {
  const conditions = host.status?.conditions as Condition[] | undefined;
  const schedulableCondition = conditions?.find((c) => c.type === "Schedulable");
  return (
    isHostReady(host) &&
    (host.spec.allocationState ?? "Enabled") === "Enabled" &&
    !host.spec.maintenance &&
    !MAINTENANCE_STATES.has(host.status?.resourceState ?? "") &&
    schedulableCondition?.status !== "False"
  );
}

export function desiredZoneStatus(
  zone: Zone,
  hosts: readonly Host[],
  now: Date = new Date(),
): NonNullable<Zone["status"]> {
  const ready = hosts.filter(isHostReady);
  const schedulable = hosts.filter(isHostSchedulable);
  const sumMemory = (values: (string | undefined)[]) =>
    formatQuantity(values.reduce((sum, v) => sum + (v ? parseQuantity(v) : 0n), 0n));
  const enabled = (zone.spec.allocationState ?? "Enabled") === "Enabled";
  const readyCondition: ConditionInput = !enabled
    ? {
        type: "Ready",
        status: "False",
        reason: "Disabled",
        message: "The zone is disabled: no new VMs are placed in it.",
      }
    : schedulable.length === 0
      ? {
          type: "Ready",
          status: "False",
          reason: "NoSchedulableHosts",
          message: `None of the zone's ${hosts.length} hosts accepts VMs (${ready.length} ready).`,
        }
      : {
          type: "Ready",
          status: "True",
          reason: "HostsAvailable",
          message: `${schedulable.length} of ${hosts.length} hosts accept VMs.`,
        };
  return {
    observedGeneration: zone.metadata.generation ?? 0,
    hosts: { total: hosts.length, ready: ready.length, schedulable: schedulable.length },
    capacity: {
      cpu: ready.reduce((sum, h) => sum + (h.status?.capacity?.cpu ?? 0), 0),
      memory: sumMemory(ready.map((h) => h.status?.capacity?.memory)),
    },
    allocated: {
      cpu: hosts.reduce((sum, h) => sum + (h.status?.allocated?.cpu ?? 0), 0),
      memory: sumMemory(hosts.map((h) => h.status?.allocated?.memory)),
    },
    conditions: setCondition(
      zone.status?.conditions as Condition[] | undefined,
      readyCondition,
      zone.metadata.generation,
      now,
    ),
  };
}

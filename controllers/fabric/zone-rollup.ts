// Fabric: rolls the facts of a zone's hosts (readiness, capacity, allocation) up into Zone status.
import { type Host, Resources, type Zone } from "../../crds/index.ts";
import type { Component } from "../../runtime/component.ts";
import { Controller } from "../../runtime/controller.ts";
import { applyStatus } from "../../runtime/objects.ts";
import { desiredZoneStatus } from "./zone-status.ts";

export const fabricComponent: Component = {
  name: "fabric",
  description: "fabric monitoring and admin: host readiness and zone roll-ups",
  setup({ client, informers, metrics, logger, fieldManager }) {
    const zones = informers.for<Zone>(Resources.zones);
    const hosts = informers.for<Host>(Resources.hosts, { indexers: { zone: (host) => [host.spec.zone] } });

    const zoneRollup = new Controller({
      name: "fabric-zone-rollup",
      logger,
      metrics,
      async reconcile(key, log) {
        const zone = zones.get(key);
        if (!zone) return; // deleted: nothing to roll up
        const status = desiredZoneStatus(zone, hosts.byIndex("zone", key));
        if (
          await applyStatus(client, Resources.zones, zone, status as Record<string, unknown>, fieldManager)
        ) {
          log.info({ hosts: status.hosts }, "zone status updated");
        }
      },
    })
      .watch(zones)
      .watch(hosts, (host) => [host.spec.zone]);
    return [zoneRollup];
  },
};

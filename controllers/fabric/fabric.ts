// Fabric monitoring and admin: Host Ready from the agents' heartbeat Leases, host resource states
// through maintenance, the HostReady condition on VMs of a lost host, and roll-ups (host
// allocation, zones) that wait a moment after a change so a burst of VM changes is one write.

import { HOST_LEASE_LABEL, hostLeaseName } from "../../crds/host-lease.ts";
import {
  type Host,
  Resources,
  type ServiceOffering,
  type VirtualMachine,
  type Zone,
} from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, isConditionTrue } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { LEASE, type Lease } from "../../runtime/leader-election.ts";
import { applyStatus } from "../../runtime/objects.ts";
import { VMS_BY_HOST } from "../scheduler/host-usage.ts";
import { type ControllerSettings, ROLLUP_DELAY_MS } from "../settings.ts";
import { desiredHostStatus, type PlacedUsage, strandedBy } from "./host-status.ts";
import { lostVmsController } from "./lost-vms.ts";
import { desiredZoneStatus } from "./zone-status.ts";

export function fabricComponent(settings: ControllerSettings): Component {
  return {
    name: "fabric",
    description: "fabric monitoring and admin: host heartbeats, maintenance, zone roll-ups",
    setup({ client, informers, metrics, logger, fieldManager, events }) {
      const zones = informers.for<Zone>(Resources.zones);
      const hosts = informers.for<Host>(Resources.hosts, { indexers: { zone: (host) => [host.spec.zone] } });
      const leases = informers.for<Lease>(LEASE, {
        namespace: settings.leaseNamespace,
        labelSelector: HOST_LEASE_LABEL,
      });
      const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
        indexers: VMS_BY_HOST,
      });
      const offerings = informers.for<ServiceOffering>(Resources.serviceOfferings);

      const placedOn = (host: string): PlacedUsage => {
        const usage = {
          cpu: 0,
          memoryBytes: 0n,
          virtualMachines: 0,
          stranded: [] as { vm: string; message: string }[],
        };
        for (const vm of vms.byIndex("host", host)) {
          const offering = offerings.get(vm.spec.serviceOffering);
          const stranded = strandedBy(host, vm);
          if (stranded) usage.stranded.push(stranded);
          usage.virtualMachines += 1;
          usage.cpu += offering?.spec.cpu ?? 0;
          usage.memoryBytes += offering ? parseQuantity(offering.spec.memory) : 0n;
        }
        return usage;
      };

      const hostMonitor = new Controller({
        name: "fabric-host-monitor",
        logger,
        metrics,
        async reconcile(name, log) {
          const host = hosts.get(name);
          if (!host) return undefined;
          const leaseName = hostLeaseName(name);
          const { status, recheckAfterMs } = desiredHostStatus(
            host,
            leases.get(`${settings.leaseNamespace}/${leaseName}`),
            placedOn(name),
            { graceMs: settings.hostGraceMs, leaseName: `${settings.leaseNamespace}/${leaseName}` },
          );
          const wasReady = isConditionTrue(host.status?.conditions as Condition[] | undefined, "Ready");
          if (await applyStatus(client, Resources.hosts, host, status, fieldManager)) {
            const ready = (status.conditions as Condition[]).find((c) => c.type === "Ready");
            if (wasReady !== (ready?.status === "True"))
              log.info({ ready: ready?.status, reason: ready?.reason }, "host readiness changed");
          }
          // Without a renewal the Lease expires silently: look again when it would.
          return recheckAfterMs === undefined ? undefined : { requeueAfterMs: recheckAfterMs };
        },
      })
        .watch(hosts)
        .watch(leases, (lease) => {
          const host = lease.metadata.labels?.[HOST_LEASE_LABEL];
          return host ? [host] : [];
        })
        .watch(vms, (vm) => (vm.status?.host ? [vm.status.host] : []), { delayMs: ROLLUP_DELAY_MS })
        .watch(offerings, () => hosts.list().map((h) => h.metadata.name as string), {
          delayMs: ROLLUP_DELAY_MS,
        });

      const lostVms = lostVmsController({
        client,
        logger,
        metrics,
        events,
        fieldManager,
        settings,
        vms,
        hosts,
        leases,
        offerings,
      });

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
        .watch(hosts, (host) => [host.spec.zone], { delayMs: ROLLUP_DELAY_MS });
      return [hostMonitor, lostVms, zoneRollup];
    },
  };
}

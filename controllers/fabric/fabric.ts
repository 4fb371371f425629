// Fabric monitoring and admin: Host Ready from the agents' heartbeat Leases, host resource states
// through maintenance, VMs on a lost host shown Unknown, and zone roll-ups.
import {
  type Host,
  Resources,
  type ServiceOffering,
  type VirtualMachine,
  type Zone,
} from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { isNotFound, objectKey } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, isConditionTrue, ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { LEASE, type Lease } from "../../runtime/leader-election.ts";
import { applyStatus } from "../../runtime/objects.ts";
import type { ControllerSettings } from "../settings.ts";
import { desiredHostStatus, type PlacedUsage } from "./host-status.ts";
import { desiredZoneStatus } from "./zone-status.ts";

/** The heartbeat Lease of a host, as its agent names it. */
export function hostLeaseName(host: string): string {
  return `host-${host}`;
}

export function fabricComponent(settings: ControllerSettings): Component {
  return {
    name: "fabric",
    description: "fabric monitoring and admin: host heartbeats, maintenance, zone roll-ups",
    setup({ client, informers, metrics, logger, fieldManager }) {
      const zones = informers.for<Zone>(Resources.zones);
      const hosts = informers.for<Host>(Resources.hosts, { indexers: { zone: (host) => [host.spec.zone] } });
      const leases = informers.for<Lease>(LEASE, {
        namespace: settings.leaseNamespace,
        labelSelector: "stratus.io/host",
      });
      const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
        indexers: { host: (vm) => (vm.status?.host ? [vm.status.host] : []) },
      });
      const offerings = informers.for<ServiceOffering>(Resources.serviceOfferings);

      const placedOn = (host: string): PlacedUsage => {
        const usage = { cpu: 0, memoryBytes: 0n, virtualMachines: 0 };
        for (const vm of vms.byIndex("host", host)) {
          const offering = offerings.get(vm.spec.serviceOffering);
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
          const host = lease.metadata.labels?.["stratus.io/host"];
          return host ? [host] : [];
        })
        .watch(vms, (vm) => (vm.status?.host ? [vm.status.host] : []))
        .watch(offerings, () => hosts.list().map((h) => h.metadata.name as string));

      // A VM on a host that is not Ready is Unknown: nobody can say whether it still runs.
      const lostVms = new Controller({
        name: "fabric-lost-vms",
        logger,
        metrics,
        async reconcile(key) {
          const vm = vms.get(key);
          const hostName = vm?.status?.host;
          const host = hostName ? hosts.get(hostName) : undefined;
          if (!vm || !host || vm.metadata.deletionTimestamp) return;
          const ready = (host.status?.conditions as Condition[] | undefined)?.find((c) => c.type === "Ready");
          if (!ready || ready.status === "True") return;
          const conditions = ownConditions(
            vm.status?.conditions as Condition[] | undefined,
            vm.metadata.generation,
            [
              {
                type: "Ready",
                status: "Unknown",
                reason: "HostNotReady",
                message: `Host ${hostName} is not ready (${ready.reason}): the VM's state is unknown.`,
              },
            ],
          );
          try {
            await applyStatus(
              client,
              Resources.virtualMachines,
              vm,
              { state: "Unknown", conditions },
              fieldManager,
            );
          } catch (error) {
            if (!isNotFound(error)) throw error;
          }
        },
      })
        .watch(vms)
        .watch(hosts, (host) => vms.byIndex("host", host.metadata.name as string).map(objectKey));

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
      return [hostMonitor, lostVms, zoneRollup];
    },
  };
}

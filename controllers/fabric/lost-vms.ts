// The fabric's VMs on lost hosts: HostReady on each VM whose host is not Ready, and the failover
// of HA VMs (decided in failover.ts). Only VMs whose say must change are looked at, so healthy
// hosts cost nothing. A release is written on the VM version that was read and only after a fresh
// read of the host's Lease: a start claimed meanwhile by the host (host-agent/fencing.ts) makes it fail.
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { hostLeaseName } from "../../crds/host-lease.ts";
import {
  type Host,
  isReleasedByFailover as isReleased,
  Resources,
  rootVolumeName,
  type ServiceOffering,
  type VirtualMachine,
  type Volume,
} from "../../crds/index.ts";
import { isConflict, isNotFound, type KubeClient, objectKey } from "../../runtime/client.ts";
import type { Condition } from "../../runtime/conditions.ts";
import { ownConditions } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import type { EventRecorder } from "../../runtime/events.ts";
import type { Informer } from "../../runtime/informer.ts";
import { LEASE, type Lease } from "../../runtime/leader-election.ts";
import type { RuntimeMetrics } from "../../runtime/metrics.ts";
import { unlessGone } from "../../runtime/objects.ts";
import type { ControllerSettings } from "../settings.ts";
import { decideLostVm, type LostVmDecision, type LostVmInput } from "./failover.ts";

export function lostVmsController(context: {
  client: KubeClient;
  logger: Logger;
  metrics: RuntimeMetrics;
  events: EventRecorder;
  fieldManager: string;
  settings: ControllerSettings;
  vms: Informer<VirtualMachine>;
  hosts: Informer<Host>;
  leases: Informer<Lease>;
  offerings: Informer<ServiceOffering>;
}): Controller {
  const { client, vms, hosts, leases, offerings, settings } = context;
  const hostOf = (vm: VirtualMachine) => (vm.status?.host ? hosts.get(vm.status.host) : undefined);
  const leaseKey = (host: string) => `${settings.leaseNamespace}/${hostLeaseName(host)}`;
  const hostNotReady = (vm: VirtualMachine) =>
    (hostOf(vm)?.status?.conditions as Condition[] | undefined)?.some(
      (c) => c.type === "Ready" && c.status !== "True",
    ) ?? false;
  const awaitingRestart = (vm: VirtualMachine) =>
    vm.status?.failover !== undefined && vm.status.failover.restartedOn === undefined;
  const needsLook = (vm: VirtualMachine): boolean =>
    !vm.metadata.deletionTimestamp &&
    (hostNotReady(vm) ||
      awaitingRestart(vm) ||
      vm.status?.conditions?.some((c) => c.type === "HostReady") === true);

  /** The VM's volumes, read only for an HA VM that may have to start elsewhere. */
  async function volumesOf(vm: VirtualMachine) {
    const namespace = vm.metadata.namespace as string;
    const names = [
      rootVolumeName(vm.metadata.name as string),
      ...(vm.spec.dataVolumes ?? []).map((d) => d.volume),
    ];
    const found = await Promise.all(
      names.map((name) => unlessGone(client.get<Volume>(Resources.volumes, name, namespace))),
    );
    return found.flatMap((volume) =>
      volume
        ? [
            {
              name: volume.metadata.name as string,
              ...(volume.status?.pool ? { pool: volume.status.pool } : {}),
              ...(volume.status?.poolType ? { poolType: volume.status.poolType } : {}),
            },
          ]
        : [],
    );
  }

  /** The zone's hosts, and how many have been Ready for at least the lost host's Lease duration. */
  function zoneHealth(zone: string, lease: Lease | undefined): LostVmInput["zone"] {
    const settleMs = (lease?.spec.leaseDurationSeconds ?? 20) * 1000;
    const inZone = hosts.byIndex("zone", zone);
    const settledReady = inZone.filter((host) => {
      const ready = (host.status?.conditions as Condition[] | undefined)?.find((c) => c.type === "Ready");
      return ready?.status === "True" && Date.parse(ready.lastTransitionTime) <= Date.now() - settleMs;
    }).length;
    return { hosts: inZone.length, settledReady };
  }

  async function decide(vm: VirtualMachine, lease: Lease | undefined): Promise<LostVmDecision> {
    const highAvailability = offerings.get(vm.spec.serviceOffering)?.spec.highAvailability === true;
    const mayMove =
      (highAvailability || hostOf(vm)?.spec.degraded === true) && hostNotReady(vm) && !isReleased(vm);
    return decideLostVm({
      vm,
      host: hostOf(vm),
      lease,
      highAvailability,
      volumes: mayMove ? await volumesOf(vm) : [],
      graceMs: settings.hostGraceMs,
      zone: zoneHealth(vm.spec.zone, lease),
      now: Date.now(),
    });
  }

  return new Controller({
    name: "fabric-lost-vms",
    logger: context.logger,
    metrics: context.metrics,
    async reconcile(key, log) {
      const vm = vms.get(key);
      if (!vm || !needsLook(vm)) return undefined;
      const host = vm.status?.host;
      let decision = await decide(vm, host ? leases.get(leaseKey(host)) : undefined);
      const releasing =
        decision.failover !== undefined &&
        decision.failover.releasedAt !== vm.status?.failover?.releasedAt &&
        !decision.failover.restartedOn;
      if (releasing) {
        // A release: the cached Lease may be behind a renewal; only a fresh read may let the VM go.
        const [namespace, name] = leaseKey(host as string).split("/") as [string, string];
        decision = await decide(vm, await unlessGone(client.get<Lease>(LEASE, name, namespace)));
      }
      const conditions = ownConditions(
        vm.status?.conditions as Condition[] | undefined,
        vm.metadata.generation,
        decision.hostReady ? [decision.hostReady] : [],
      );
      const current = vm.status?.conditions?.find((c) => c.type === "HostReady");
      const unchanged =
        isDeepStrictEqual(decision.failover, vm.status?.failover) &&
        current?.reason === decision.hostReady?.reason &&
        current?.message === decision.hostReady?.message;
      if (!unchanged) {
        try {
          // Applying without a field of its own drops it (server-side apply): that clears them.
          await client.apply(
            Resources.virtualMachines,
            {
              metadata: {
                name: vm.metadata.name as string,
                namespace: vm.metadata.namespace as string,
                ...(decision.conditional ? { resourceVersion: vm.metadata.resourceVersion as string } : {}),
              },
              status: { conditions, ...(decision.failover ? { failover: decision.failover } : {}) },
            },
            { fieldManager: context.fieldManager, subresource: "status" },
          );
        } catch (error) {
          // Changed meanwhile (a start claimed, a placement) or gone: the watch brings the new version.
          if (isConflict(error) || isNotFound(error)) return undefined;
          throw error;
        }
        if (decision.event) {
          log.info({ reason: decision.event.reason }, decision.event.note);
          await context.events.record(Resources.virtualMachines, vm, {
            ...decision.event,
            action: "Failover",
          });
        }
      }
      return decision.recheckAfterMs === undefined ? undefined : { requeueAfterMs: decision.recheckAfterMs };
    },
  })
    .watch(vms, (vm) => (needsLook(vm) ? [objectKey(vm)] : []))
    .watch(hosts, (host) =>
      vms
        .byIndex("host", host.metadata.name as string)
        .filter(needsLook)
        .map(objectKey),
    );
}

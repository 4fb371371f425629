// Compute, the orchestration engine: carries a VM from its create to a host in one status write.
// It makes sure the ROOT Volume and each NIC's IPAddress exist (creates, in parallel; their
// responses prove them), decides VolumesReady and NetworksReady, and places the VM once both hold,
// as CloudStack's VirtualMachineManagerImpl calls the planner, VolumeOrchestrator and
// NetworkOrchestrator. The host agent of status.host owns everything after that.
import type { Logger } from "pino";
import { DOMAIN_FINALIZER } from "../../crds/finalizers.ts";
import {
  type AffinityGroup,
  type DiskOffering,
  type Host,
  type IPAddress,
  type Network,
  Resources,
  rootVolumeName,
  type ServiceOffering,
  type StoragePool,
  type Template,
  type VirtualMachine,
  type VirtualMachineMigration,
  type Volume,
  type Zone,
} from "../../crds/index.ts";
import {
  computeLimitsOf,
  isQuotaRefusal,
  RESOURCE_LIMITS_QUOTA,
  RESOURCE_QUOTAS,
  type ResourceQuota,
  storageLimitOf,
} from "../../crds/resource-limits.ts";
import { ADMITTED_CONDITION } from "../../crds/volume-admission.ts";
import { isAlreadyExists, isConflict, isNotFound, objectKey } from "../../runtime/client.ts";
import type { Component } from "../../runtime/component.ts";
import { type Condition, findCondition } from "../../runtime/conditions.ts";
import { Controller } from "../../runtime/controller.ts";
import { notWrittenIfGone, ownerReference, removeFinalizer, statusSays } from "../../runtime/objects.ts";
import { ADDRESS_INDEXERS, AddressAllocator } from "../network/ipam.ts";
import { HostUsageCache, VMS_BY_HOST } from "../scheduler/host-usage.ts";
import type { Algorithm } from "../scheduler/placement.ts";
import { needOf, POOLS_BY_ZONE, poolUsages, VOLUMES_BY_POOL } from "../storage/pool-usage.ts";
import { MIGRATIONS_BY_VM, migrationController } from "./migration.ts";
import { migratedTo } from "./migration-decision.ts";
import { decideOrchestration, type RootVolumeFact, wantsRootVolume } from "./orchestration.ts";

const withMigratedTo = (host: string | undefined) => (host ? { migratedTo: host } : {});

/**
 * Whether the account's primary-storage limit granted the VM's new volumes, as orchestration input:
 * the first one it holds, else (in an account with a limit) the first it has not decided yet: the
 * VM is placed only once it has. A disk that exists is used at its size whatever a resize asks.
 */
function storageRefusalOf(
  volumes: readonly Volume[],
  accountLimited: boolean,
): { storageRefusal?: string; storageUndecided?: string } {
  const own = volumes.filter((volume) => !volume.status?.pool);
  const admittedOf = (volume: Volume) => findCondition(volume.status?.conditions, ADMITTED_CONDITION);
  const refused = own.find((volume) => admittedOf(volume)?.status === "False");
  if (refused) return { storageRefusal: admittedOf(refused)?.message ?? "" };
  const undecided = accountLimited ? own.find((volume) => !admittedOf(volume)) : undefined;
  return undecided ? { storageUndecided: undecided.metadata.name as string } : {};
}

const notReadyYet = (vm: VirtualMachine, type: string) =>
  vm.status?.conditions?.some((c) => c.type === type && c.status !== "True") ?? true;

export function computeComponent(
  algorithm: Algorithm = "least-allocated",
  maxMigrationsPerHost = 2,
): Component {
  return {
    name: "compute",
    description: `orchestration: root volumes, addresses and placement (filters, then ${algorithm}) in one write`,
    setup({ client, informers, metrics, logger, fieldManager, events }) {
      const vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
        indexers: {
          ...VMS_BY_HOST,
          unplaced: (vm) => (vm.status?.host ? [] : [vm.spec.zone]),
          unplacedInNamespace: (vm) => (vm.status?.host ? [] : [vm.metadata.namespace as string]),
          volume: (vm) => (vm.spec.dataVolumes ?? []).map((d) => `${vm.metadata.namespace}/${d.volume}`),
          network: (vm) => (vm.spec.nics ?? []).map((nic) => `${vm.metadata.namespace}/${nic.network}`),
          affinityGroup: (vm) =>
            (vm.spec.placement?.affinityGroups ?? []).map((group) => `${vm.metadata.namespace}/${group}`),
        },
      });
      const affinityGroups = informers.for<AffinityGroup>(Resources.affinityGroups);
      const volumes = informers.for<Volume>(Resources.volumes, { indexers: VOLUMES_BY_POOL });
      const pools = informers.for<StoragePool>(Resources.storagePools, { indexers: POOLS_BY_ZONE });
      const diskOfferings = informers.for<DiskOffering>(Resources.diskOfferings);
      const diskOffering = (name: string | undefined) => (name ? diskOfferings.get(name) : undefined);
      const templates = informers.for<Template>(Resources.templates);
      const hosts = informers.for<Host>(Resources.hosts);
      const zones = informers.for<Zone>(Resources.zones);
      const offerings = informers.for<ServiceOffering>(Resources.serviceOfferings);
      const networks = informers.for<Network>(Resources.networks);
      const addresses = informers.for<IPAddress>(Resources.ipAddresses, { indexers: ADDRESS_INDEXERS });
      const migrations = informers.for<VirtualMachineMigration>(Resources.virtualMachineMigrations, {
        indexers: MIGRATIONS_BY_VM,
      });
      // Accounts' limits: a new limit, or room freed (the quota's status.used), may let a VM in.
      const limits = informers.for<ResourceQuota>(RESOURCE_QUOTAS, {
        fieldSelector: `metadata.name=${RESOURCE_LIMITS_QUOTA}`,
      });
      const usage = new HostUsageCache(vms, offerings);
      const allocator = new AddressAllocator(client, addresses, networks);

      /** The ROOT Volume exists (from the cache, else by creating it now), or why it does not. */
      async function ensureRootVolume(
        vm: VirtualMachine,
        template: Template,
        log: Logger,
      ): Promise<{ fact: RootVolumeFact; volume?: Volume; refusal?: string }> {
        const name = rootVolumeName(vm.metadata.name as string);
        const namespace = vm.metadata.namespace as string;
        const cached = volumes.get(`${namespace}/${name}`);
        if (cached)
          return cached.metadata.ownerReferences?.some((o) => o.uid === vm.metadata.uid)
            ? { fact: "ready", volume: cached }
            : { fact: "foreign" };
        try {
          const created = await client.create<Volume>(Resources.volumes, {
            apiVersion: "stratus.io/v1alpha1",
            kind: "Volume",
            metadata: {
              name,
              namespace,
              labels: { "stratus.io/virtual-machine": vm.metadata.name as string },
              ownerReferences: [ownerReference(Resources.virtualMachines, vm)],
            },
            spec: {
              zone: vm.spec.zone,
              type: "ROOT",
              size: vm.spec.rootDisk?.size ?? template.spec.minimumDiskSize ?? "1Gi",
              ...(vm.spec.rootDisk?.diskOffering ? { diskOffering: vm.spec.rootDisk.diskOffering } : {}),
              source: { template: vm.spec.template },
            },
          });
          log.info({ volume: name }, "created the root volume");
          return { fact: "ready", volume: created };
        } catch (error) {
          if (isAlreadyExists(error)) return { fact: "unconfirmed" };
          if (isQuotaRefusal(error)) return { fact: "over-limit", refusal: (error as Error).message };
          throw error;
        }
      }

      async function releaseDeleted(vm: VirtualMachine, log: Logger): Promise<void> {
        // Placed VMs are the agent's to release: only it knows the domain and disk are gone.
        if (vm.status?.host) return;
        if (
          await removeFinalizer(client, Resources.virtualMachines, vm, DOMAIN_FINALIZER).catch(
            notWrittenIfGone,
          )
        )
          log.info("deleted before it had a host: released");
      }

      const controller = new Controller({
        name: "compute",
        logger,
        metrics,
        async reconcile(key, log) {
          const vm = vms.get(key);
          if (!vm) return undefined;
          if (vm.metadata.deletionTimestamp) {
            await releaseDeleted(vm, log);
            return undefined;
          }
          // Placed a moment ago by this process; the cache shows it soon and re-queues the VM.
          if (usage.isAssumed(key)) return undefined;
          const namespace = vm.metadata.namespace as string;
          const template = templates.get(vm.spec.template);
          const [root, nics] = await Promise.all([
            wantsRootVolume(vm, template)
              ? ensureRootVolume(vm, template as Template, log)
              : Promise.resolve<{ fact: RootVolumeFact; volume?: Volume; refusal?: string }>({
                  fact: "not-needed",
                }),
            allocator.ensureAddresses(vm, log),
          ]);
          const dataVolumes = new Map<string, Volume>();
          for (const slot of vm.spec.dataVolumes ?? []) {
            const volume = volumes.get(`${namespace}/${slot.volume}`);
            if (volume) dataVolumes.set(slot.volume, volume);
          }
          const offering = offerings.get(vm.spec.serviceOffering);
          const own = [...(root.volume ? [root.volume] : []), ...dataVolumes.values()];
          const zonePools = pools.byIndex("zone", vm.spec.zone);
          const hard = limits.get(`${namespace}/${RESOURCE_LIMITS_QUOTA}`)?.spec?.hard;
          const decision = decideOrchestration({
            vm,
            template,
            offering,
            zone: zones.get(vm.spec.zone),
            rootVolume: root.fact,
            ...(root.refusal ? { rootVolumeRefusal: root.refusal } : {}),
            ...storageRefusalOf(own, storageLimitOf(hard) !== undefined),
            accountLimits: computeLimitsOf(hard),
            accountUsage: () => usage.accountUsage(namespace),
            dataVolumes,
            nics,
            volumeNeeds: own.map((v) => needOf(v, diskOffering, offering)),
            moveTargets: new Map(
              own.flatMap((v) => {
                const target = v.status?.transfer?.target?.pool;
                return target ? [[v.metadata.name as string, target]] : [];
              }),
            ),
            pools: zonePools,
            hostNamed: (name) => hosts.get(name),
            hostUsages: () => hosts.list().map((h) => usage.usageOf(h)),
            // The VM's own disks are what is being placed: their room is counted once, as needs.
            poolUsages: () =>
              poolUsages(
                zonePools,
                (pool) => volumes.byIndex("pool", pool),
                diskOffering,
                new Set(own.map(objectKey)),
              ),
            algorithm,
            affinityGroupType: (name) => affinityGroups.get(`${namespace}/${name}`)?.spec.type,
            ...withMigratedTo(migratedTo(vm, migrations.byIndex("vm", key))),
          });
          const { status, placement } = decision;
          const requeue =
            decision.requeueAfterMs === undefined ? undefined : { requeueAfterMs: decision.requeueAfterMs };
          if (!status || statusSays(status, (vm.status ?? {}) as Record<string, unknown>)) return requeue;
          // Assumed before the write, with no await between choosing and assuming: another worker
          // choosing meanwhile already counts this VM.
          if (placement) usage.assume(key, placement.host, placement.demand);
          try {
            await client.apply(
              Resources.virtualMachines,
              {
                metadata: {
                  name: vm.metadata.name as string,
                  namespace,
                  // The precondition: placed from what this VM was, never twice by racing orchestrators.
                  ...(placement ? { resourceVersion: vm.metadata.resourceVersion as string } : {}),
                },
                status,
              },
              { fieldManager, subresource: "status" },
            );
          } catch (error) {
            if (placement) usage.forget(key);
            // Changed meanwhile (or gone): the watch brings the new version, which is tried afresh.
            if (isConflict(error) || isNotFound(error)) return undefined;
            throw error;
          }
          if (placement) log.info({ host: placement.host, from: vm.status?.evacuatedFrom }, "placed");
          await reportProblems(vm, status.conditions);
          return requeue;
        },
      });

      /** An Event for each of compute's conditions that just turned False for a new reason. */
      async function reportProblems(vm: VirtualMachine, conditions: readonly Condition[]): Promise<void> {
        for (const condition of conditions) {
          if (condition.status !== "False" || condition.reason === "WaitingForResources") continue;
          const before = vm.status?.conditions?.find((c) => c.type === condition.type);
          if (before?.status === "False" && before.reason === condition.reason) continue;
          await events.record(Resources.virtualMachines, vm, {
            type: "Warning",
            reason: condition.reason,
            action: condition.type === "Scheduled" ? "Schedule" : "Prepare",
            note: condition.message,
          });
        }
      }

      const unplacedIn = (zone: string) => vms.byIndex("unplaced", zone).map(objectKey);
      const waitingFor = (index: string, key: string, type: string) =>
        vms
          .byIndex(index, key)
          .filter((vm) => notReadyYet(vm, type))
          .map(objectKey);
      controller
        // A VM that takes or frees room on a host may let a waiting VM of its zone in.
        .watch(vms, (vm) =>
          vm.status?.host ? [objectKey(vm), ...unplacedIn(vm.spec.zone)] : [objectKey(vm)],
        )
        .watch(volumes, (volume) => {
          const owner = volume.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine");
          return [
            ...vms.byIndex("volume", objectKey(volume)).map(objectKey),
            ...(owner ? [`${volume.metadata.namespace}/${owner.name}`] : []),
          ];
        })
        .watch(templates, (template) =>
          vms
            .list()
            .filter((vm) => vm.spec.template === template.metadata.name)
            .map(objectKey),
        )
        .watch(hosts, (host) => unplacedIn(host.spec.zone))
        .watch(limits, (quota) =>
          vms.byIndex("unplacedInNamespace", quota.metadata.namespace as string).map(objectKey),
        )
        // Placement reads a pool's spec (tags, maintenance); its rolled-up status churns with every volume.
        .watch(pools, (pool) => unplacedIn(pool.spec.zone), { specChangesOnly: true })
        .watch(zones, (zone) => unplacedIn(zone.metadata.name as string))
        // A VM waits for the groups it names; a group that appears or goes lets it be placed.
        .watch(affinityGroups, (group) =>
          vms
            .byIndex("affinityGroup", objectKey(group))
            .filter((vm) => !vm.status?.host)
            .map(objectKey),
        )
        .watch(offerings, () =>
          vms
            .list()
            .filter((vm) => !vm.status?.host)
            .map(objectKey),
        )
        // A network that appears, or an address that is freed, may unblock VMs waiting for one.
        .watch(networks, (network) => waitingFor("network", objectKey(network), "NetworksReady"))
        .watch(addresses, (address) =>
          waitingFor("network", `${address.metadata.namespace}/${address.spec.network}`, "NetworksReady"),
        )
        // A completed live migration moves the VM's binding.
        .watch(migrations, (m) => [`${m.metadata.namespace}/${m.spec.vm}`]);
      const migrating = migrationController({
        client,
        fieldManager,
        logger,
        metrics,
        events,
        migrations,
        vms,
        volumes,
        pools,
        hosts,
        offerings,
        diskOffering,
        usage,
        affinityGroupType: (key) => affinityGroups.get(key)?.spec.type,
        maxPerHost: maxMigrationsPerHost,
      });
      return [controller, migrating];
    },
  };
}

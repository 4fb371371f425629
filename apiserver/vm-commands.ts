// CloudStack's virtual machine commands over the caller's VirtualMachines: list, deploy (with its
// networks, user data, guest login, affinity groups and data disk), start, stop, reboot, update,
// change of service offering, destroy and expunge (the same: Stratus deletes at once) and recover
// (refused: nothing is ever left to recover). Start, stop and reboot change the VM and answer a job
// that ends when the VM gets there (jobs.ts).
import { displayState } from "../crds/display-state.ts";
import {
  type Network,
  RESTART_ANNOTATION,
  Resources,
  type Template,
  type VirtualMachine,
  type Zone,
} from "../crds/index.ts";
import { isIso } from "../crds/template-images.ts";
import { isAlreadyExists } from "../runtime/client.ts";
import { groupMembersFilter, requestedGroups } from "./affinity-commands.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { createDeployDataDisk } from "./deploy-disk.ts";
import { ApiError, ERROR, entityNotFound, type Json } from "./envelope.ts";
import { deployGuestLogin, writeVmPassword } from "./guest-login.ts";
import { guestLoginUnsupported, prunedGuestLoginField } from "./guest-login-fields.ts";
import { jobAnswer, submitJob } from "./jobs.ts";
import { byId, filtered, namespaced, ownedById, page } from "./listing.ts";
import { createdNetwork } from "./network-commands.ts";
import { DNS_LABEL } from "./params.ts";
import { requestedUserData, userDataSecretName, writeUserData } from "./user-data.ts";
import { virtualMachineView } from "./views.ts";

const vmView = (api: CloudStackApi, vm: VirtualMachine) => virtualMachineView(vm, api);

function setRunStrategy(call: Call, vm: VirtualMachine, runStrategy: "Always" | "Halted") {
  return call.caller.client.mergePatch(
    Resources.virtualMachines,
    vm.metadata.name as string,
    vm.metadata.namespace,
    {
      spec: { runStrategy },
    },
  );
}

/** start and stop: the VM's runStrategy, then a job that ends when the VM gets there. */
function runStrategyCommand(command: string, runStrategy: "Always" | "Halted"): Command {
  return {
    async: true,
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      await setRunStrategy(call, vm, runStrategy);
      return jobAnswer(call, command, vm);
    },
  };
}

/**
 * The caller's networks as the cache shows them, or, when `found` finds nothing there, as the API
 * server does: a network created a moment ago (Terraform deploys right after createNetwork) may not
 * be in this replica's cache yet.
 */
async function callerNetworks<T>(
  call: Call,
  found: (networks: Network[]) => T | undefined,
): Promise<T | undefined> {
  const account = call.caller.account;
  const cached = found(call.api.networks.list().filter((n) => n.metadata.namespace === account));
  if (cached !== undefined) return cached;
  return found((await call.caller.client.list<Network>(Resources.networks, { namespace: account })).items);
}

/**
 * A deploy from an ISO, as CloudStack's: it must be bootable, and diskofferingid gives the blank
 * root disk the guest installs onto (`size` GiB for an offering without one). The ISO stays in the
 * drive until detachIso.
 */
function isoInstall(call: Call, iso: Template): Pick<VirtualMachine["spec"], "rootDisk" | "iso"> {
  if (iso.spec.bootable === false)
    throw new ApiError(ERROR.PARAM, `ISO ${iso.metadata.name} is not bootable: deploy from a bootable ISO`);
  if (call.params.get("diskofferingid") === undefined)
    throw new ApiError(
      ERROR.PARAM,
      "Installing from ISO requires a disk offering to be specified for the root disk.",
    );
  const offering = byId(call.api.diskOfferings, call, "diskofferingid");
  const size = call.params.integer("size");
  if (!offering.spec.size && (size === undefined || size < 1))
    throw new ApiError(
      ERROR.PARAM,
      `Disk offering ${offering.metadata.name} is customized: installing from ISO needs the root disk's size (size=<GiB>)`,
    );
  return {
    rootDisk: { size: offering.spec.size ?? `${size}Gi`, diskOffering: offering.metadata.name as string },
    iso: iso.metadata.name as string,
  };
}

/** The name of the network a deploy makes for an account that has none in the zone. */
const DEFAULT_NETWORK = "default";

/**
 * A deploy without networkids gets the account's network in the zone, as CloudStack's default
 * network; an account with none gets one made, as CloudStack makes `<account>-network` (a free /24
 * of the zone's guest ranges; kept, like CloudStack's, if the deploy then fails). With several the
 * client must choose, as CloudStack asks.
 */
async function defaultNetwork(call: Call, zone: Zone): Promise<Network> {
  const account = call.caller.account;
  const zoneName = zone.metadata.name as string;
  const inZone = (networks: Network[]) => {
    const usable = networks.filter((n) => n.spec.zone === zoneName && !n.metadata.deletionTimestamp);
    return usable.length > 0 ? usable : undefined;
  };
  const own = (await callerNetworks(call, inZone)) ?? [];
  if (own.length === 1) return own[0] as Network;
  if (own.length > 1)
    throw new ApiError(
      ERROR.PARAM,
      `More than 1 default Isolated networks are found for account ${account}; please specify networkIds`,
    );
  const request = { name: DEFAULT_NETWORK, displayName: `${account}-network` };
  return createdNetwork(call, zone, request).catch(async (error: unknown) => {
    // Two deploys at once: the other made it (a network of the same name in another zone is refused).
    if (!isAlreadyExists(error)) throw error;
    const made = await call.caller.client.get<Network>(Resources.networks, DEFAULT_NETWORK, account);
    if (made.spec.zone !== zoneName)
      throw new ApiError(
        ERROR.PARAM,
        `Account ${account} has no network in zone ${zoneName} and its network ${DEFAULT_NETWORK} is in zone ${made.spec.zone}; specify networkIds`,
      );
    return made;
  });
}

const destroyVirtualMachine: Command = {
  async: true,
  async handler(call) {
    const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
    // Stratus has no recycle bin: destroy deletes, with or without expunge.
    const job = await submitJob(call, "destroyVirtualMachine", vm);
    await call.caller.client.delete(
      Resources.virtualMachines,
      vm.metadata.name as string,
      vm.metadata.namespace,
    );
    return { jobid: job.metadata.uid as string };
  },
};

export const VM_COMMANDS: Record<string, Command> = {
  listVirtualMachines: {
    async handler(call) {
      const state = call.params.get("state")?.toLowerCase();
      const zoneId = call.params.uuid("zoneid");
      const members = await groupMembersFilter(call);
      const vms = filtered(
        call,
        await namespaced(call, call.api.vms, Resources.virtualMachines),
        (vm) => vm.spec.displayName,
      )
        .filter(members)
        .map((vm) => vmView(call.api, vm) as Record<string, Json>)
        .filter((vm) => !state || String(vm.state).toLowerCase() === state)
        .filter((vm) => !zoneId || vm.zoneid === zoneId);
      return page(call, "virtualmachine", vms);
    },
  },
  deployVirtualMachine: {
    async: true,
    async handler(call) {
      const { params, api } = call;
      const offering = byId(api.serviceOfferings, call, "serviceofferingid");
      const template = byId(api.templates, call, "templateid");
      const zone = byId(api.zones, call, "zoneid");
      const name = (params.get("name") ?? `vm-${Math.random().toString(16).slice(2, 10)}`).toLowerCase();
      if (!DNS_LABEL.test(name) || name.length > 63)
        throw new ApiError(
          ERROR.PARAM,
          `Invalid parameter name value=${name}: a VM name is a host name (letters, digits and hyphens)`,
        );
      const asked: Network[] = [];
      for (const id of params.list("networkids")) {
        const network = await callerNetworks(call, (networks) =>
          networks.find((n) => n.metadata.uid === id.toLowerCase()),
        );
        if (!network) throw entityNotFound("networkids", id);
        asked.push(network);
      }
      const networks = asked.length > 0 ? asked : [await defaultNetwork(call, zone)];
      const rootDiskSize = params.integer("rootdisksize");
      const installFrom = isIso(template) ? isoInstall(call, template) : undefined;
      const userData = await requestedUserData(call, call.caller.account);
      const guestLogin = await deployGuestLogin(call, template, name);
      const address = params.get("ipaddress");
      const affinityGroups = await requestedGroups(call, call.caller.account);
      // From an ISO, diskofferingid is the root disk's, not a data disk.
      const dataDisk = installFrom
        ? undefined
        : await createDeployDataDisk(call, name, zone.metadata.name as string);
      const created = call.caller.client.create<VirtualMachine>(Resources.virtualMachines, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "VirtualMachine",
        metadata: {
          name,
          namespace: call.caller.account,
          annotations: { "stratus.io/created-by": "cloudstack-api" },
        },
        spec: {
          zone: zone.metadata.name as string,
          serviceOffering: offering.metadata.name as string,
          template: template.metadata.name as string,
          runStrategy: params.flag("startvm", true) ? "Always" : "Halted",
          ...(params.get("displayname") ? { displayName: params.get("displayname") as string } : {}),
          ...(installFrom ?? (rootDiskSize ? { rootDisk: { size: `${rootDiskSize}Gi` } } : {})),
          ...(userData ? { userDataSecret: userDataSecretName(name) } : {}),
          ...(affinityGroups?.length ? { placement: { affinityGroups } } : {}),
          ...(dataDisk ? { dataVolumes: [dataDisk.slot] } : {}),
          ...guestLogin.spec,
          nics: networks.map((network, index) => ({
            name: `eth${index}`,
            network: network.metadata.name as string,
            ...(index === 0 && address ? { ipAddress: address } : {}),
          })),
        },
      });
      const vm = await created.catch(async (error: unknown) => {
        await dataDisk?.remove().catch(() => {});
        throw error;
      });
      const pruned = prunedGuestLoginField(vm, guestLogin.spec);
      // What the VM needs besides itself; without it, the deploy leaves nothing behind.
      await Promise.all([
        pruned ? Promise.reject(guestLoginUnsupported(pruned)) : undefined,
        userData ? writeUserData(call, vm, userData) : undefined,
        guestLogin.password ? writeVmPassword(api, vm, guestLogin.password) : undefined,
      ]).catch(async (error: unknown) => {
        await call.caller.client.delete(Resources.virtualMachines, name, call.caller.account).catch(() => {});
        await dataDisk?.remove().catch(() => {});
        throw error;
      });
      const job = await submitJob(call, "deployVirtualMachine", vm);
      return { id: vm.metadata.uid as string, jobid: job.metadata.uid as string };
    },
  },
  startVirtualMachine: runStrategyCommand("startVirtualMachine", "Always"),
  stopVirtualMachine: runStrategyCommand("stopVirtualMachine", "Halted"),
  destroyVirtualMachine,
  // Destroy already deletes in Stratus: expunging a VM that still exists is destroying it.
  expungeVirtualMachine: destroyVirtualMachine,
  recoverVirtualMachine: {
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      throw new ApiError(
        ERROR.PARAM,
        `VM ${vm.metadata.name} is not destroyed: Stratus deletes destroyed VMs at once, so there is nothing to recover`,
      );
    },
  },
  rebootVirtualMachine: {
    async: true,
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      if (displayState(vm) !== "Running")
        throw new ApiError(
          ERROR.PARAM,
          `Invalid state of VM ${vm.metadata.name}: only a running VM can be rebooted`,
        );
      await call.caller.client.mergePatch(
        Resources.virtualMachines,
        vm.metadata.name as string,
        vm.metadata.namespace,
        {
          metadata: { annotations: { [RESTART_ANNOTATION]: new Date().toISOString() } },
        },
      );
      return jobAnswer(call, "rebootVirtualMachine", vm);
    },
  },
  updateVirtualMachine: {
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      const displayName = call.params.get("displayname");
      const userData = await requestedUserData(call, vm.metadata.namespace as string);
      const secret = userData ? userDataSecretName(vm.metadata.name as string) : undefined;
      const updated = await call.caller.client.mergePatch<VirtualMachine>(
        Resources.virtualMachines,
        vm.metadata.name as string,
        vm.metadata.namespace,
        {
          spec: { ...(displayName ? { displayName } : {}), ...(secret ? { userDataSecret: secret } : {}) },
        },
      );
      if (userData) await writeUserData(call, updated, userData);
      return { virtualmachine: vmView(call.api, updated) };
    },
  },
  changeServiceForVirtualMachine: {
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      const offering = byId(call.api.serviceOfferings, call, "serviceofferingid");
      if (displayState(vm) !== "Stopped")
        throw new ApiError(
          ERROR.PARAM,
          `Unable to change the service offering of VM ${vm.metadata.name}: stop it first`,
        );
      const updated = await call.caller.client.mergePatch<VirtualMachine>(
        Resources.virtualMachines,
        vm.metadata.name as string,
        vm.metadata.namespace,
        {
          spec: { serviceOffering: offering.metadata.name as string },
        },
      );
      return { virtualmachine: vmView(call.api, updated) };
    },
  },
};

// CloudStack's public addresses of isolated networks (issue 17): associateIpAddress makes a
// PublicIPAddress in the caller's account for one of its isolated networks, which the network
// controller allocates from the zone's public ranges (its job ends when it has, or fails with
// CloudStack's 533 and leaves nothing); disassociateIpAddress releases one (never the network's
// source-NAT address); enableStaticNat and disableStaticNat map one to a VM of its network.
import {
  type AsyncJob,
  type Network,
  type PublicIPAddress,
  Resources,
  sourceNatName,
  type VirtualMachine,
} from "../crds/index.ts";
import { isNotFound } from "../runtime/client.ts";
import { findCondition } from "../runtime/conditions.ts";
import { ownerReference } from "../runtime/objects.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { jobAnswer, jobObject, type Outcome } from "./jobs.ts";
import {
  filtered,
  inAccount,
  namespaced,
  ownedById,
  page,
  patchFromCurrent,
  requireOwnAccount,
} from "./listing.ts";
import { publicAddressView, staticNatView } from "./public-address-views.ts";

const KIND = "PublicIPAddress";

/** Whether the address is its network's source-NAT address. */
export const isSourceNat = (pip: PublicIPAddress) =>
  pip.status?.sourceNat === true || pip.metadata.name === sourceNatName(pip.spec.network);

/** The public addresses a list covers, with CloudStack's filters. */
async function listed(call: Call): Promise<PublicIPAddress[]> {
  const { params, api } = call;
  const networkId = params.uuid("associatednetworkid") ?? params.uuid("networkid");
  const zoneId = params.uuid("zoneid");
  const address = params.get("ipaddress");
  const sourceNat = params.get("issourcenat");
  const staticNat = params.get("isstaticnat");
  const networkOf = (pip: PublicIPAddress) => api.network(pip.metadata.namespace as string, pip.spec.network);
  return inAccount(
    call,
    filtered(call, await namespaced(call, api.publicIPAddresses, Resources.publicIPAddresses)),
  )
    .filter((pip) => !networkId || networkOf(pip)?.metadata.uid === networkId)
    .filter((pip) => {
      const network = networkOf(pip);
      return !zoneId || (network !== undefined && api.zone(network.spec.zone)?.metadata.uid === zoneId);
    })
    .filter((pip) => !address || pip.status?.address === address)
    .filter((pip) => sourceNat === undefined || isSourceNat(pip) === (sourceNat.toLowerCase() === "true"))
    .filter(
      (pip) =>
        staticNat === undefined ||
        (pip.spec.staticNat !== undefined) === (staticNat.toLowerCase() === "true"),
    );
}

/** The VM's address on the network, if it has a NIC there. */
export function guestAddressOn(vm: VirtualMachine, network: string): string | undefined {
  return vm.status?.nics?.find((n) => n.network === network)?.ipAddress;
}

/**
 * Refuses a VM of another account or without a NIC on the address's network, and a `networkid` or
 * `vmguestip` that is not the address's network or the VM's address there, as CloudStack does.
 */
export function requireVmOnNetwork(call: Call, vm: VirtualMachine, pip: PublicIPAddress): void {
  if (
    vm.metadata.namespace !== pip.metadata.namespace ||
    !(vm.spec.nics ?? []).some((nic) => nic.network === pip.spec.network)
  )
    throw new ApiError(
      ERROR.PARAM,
      `Unable to find a NIC of VM ${vm.metadata.name} in network ${pip.spec.network}, which ip address ${pip.status?.address ?? pip.metadata.name} belongs to`,
    );
  const networkId = call.params.uuid("networkid");
  if (
    networkId &&
    call.api.network(pip.metadata.namespace as string, pip.spec.network)?.metadata.uid !== networkId
  )
    throw new ApiError(
      ERROR.PARAM,
      `ip address ${pip.status?.address} does not belong to network ${networkId}`,
    );
  const guestIp = call.params.get("vmguestip");
  if (guestIp !== undefined && guestIp !== guestAddressOn(vm, pip.spec.network))
    throw new ApiError(
      ERROR.PARAM,
      `vmguestip ${guestIp} is not the address of VM ${vm.metadata.name} in network ${pip.spec.network}`,
    );
}

function allocationOutcome(job: AsyncJob, api: CloudStackApi): Outcome {
  const pip = jobObject(api.publicIPAddresses, job, job.spec.target?.uid);
  if (!pip) return { error: { code: ERROR.INTERNAL, text: "the public address was released" } };
  const allocated = findCondition(pip.status?.conditions, "Allocated");
  if (allocated?.status === "True" && pip.status?.address)
    return { result: { ipaddress: publicAddressView(pip, api) } };
  if (allocated?.status === "False")
    return { error: { code: ERROR.INSUFFICIENT_CAPACITY, text: allocated.message } };
  return undefined;
}

export const PUBLIC_ADDRESS_COMMANDS: Record<string, Command> = {
  listPublicIpAddresses: {
    async handler(call) {
      const views = (await listed(call)).map((pip) => publicAddressView(pip, call.api) as Json);
      return page(call, "publicipaddress", views);
    },
  },
  associateIpAddress: {
    async: true,
    async handler(call) {
      const { params, api } = call;
      requireOwnAccount(call);
      for (const unsupported of ["ipaddress", "vpcid", "regionid"])
        if (params.get(unsupported))
          throw new ApiError(
            ERROR.PARAM,
            `Stratus does not take ${unsupported}: it associates the next free public address of the zone with an isolated network (networkid)`,
          );
      if (params.flag("isportable"))
        throw new ApiError(ERROR.PARAM, "Stratus has no portable public addresses");
      if (!params.uuid("networkid"))
        throw new ApiError(
          ERROR.PARAM,
          "networkid is required: Stratus associates public addresses with an isolated network",
        );
      const network = await ownedById(call, api.networks, Resources.networks, "networkid");
      const zone = api.zone(network.spec.zone);
      if ((network.spec.type ?? "Isolated") !== "Isolated")
        throw new ApiError(
          ERROR.PARAM,
          `Network ${network.metadata.name} is not an isolated network: only isolated networks have public addresses`,
        );
      if (!zone?.spec.publicNetwork)
        throw new ApiError(
          ERROR.INSUFFICIENT_CAPACITY,
          `Insufficient address capacity: zone ${network.spec.zone} has no public IP range`,
        );
      const pip = await call.caller.client.create<PublicIPAddress>(Resources.publicIPAddresses, {
        apiVersion: "stratus.io/v1alpha1",
        kind: KIND,
        metadata: {
          generateName: "ip-",
          namespace: network.metadata.namespace as string,
          // Released with its network, as CloudStack releases a network's addresses.
          ownerReferences: [
            { ...ownerReference(Resources.networks, network as Network, false), blockOwnerDeletion: false },
          ],
        },
        spec: { network: network.metadata.name as string },
      });
      return jobAnswer(call, "associateIpAddress", { ...pip, kind: KIND });
    },
    outcome: allocationOutcome,
  },
  disassociateIpAddress: {
    async: true,
    async handler(call) {
      const pip = await ownedById(call, call.api.publicIPAddresses, Resources.publicIPAddresses);
      if (isSourceNat(pip))
        throw new ApiError(
          ERROR.PARAM,
          `Can't release the source nat ip address ${pip.status?.address ?? pip.metadata.name}: it goes with network ${pip.spec.network}`,
        );
      const answer = await jobAnswer(call, "disassociateIpAddress", { ...pip, kind: KIND });
      await call.caller.client
        .delete(Resources.publicIPAddresses, pip.metadata.name as string, pip.metadata.namespace)
        .catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
      return answer;
    },
    outcome: (job, api) =>
      jobObject(api.publicIPAddresses, job, job.spec.target?.uid) ? undefined : { result: { success: true } },
  },
  enableStaticNat: {
    async handler(call) {
      const { api } = call;
      const pip = await ownedById(call, api.publicIPAddresses, Resources.publicIPAddresses, "ipaddressid");
      const vm = await ownedById(call, api.vms, Resources.virtualMachines, "virtualmachineid");
      if (isSourceNat(pip))
        throw new ApiError(
          ERROR.PARAM,
          `Can't enable static nat for the ip address ${pip.status?.address} as it's a source nat ip address`,
        );
      requireVmOnNetwork(call, vm, pip);
      const current = pip.spec.staticNat?.virtualMachine;
      if (current && current !== vm.metadata.name)
        throw new ApiError(
          ERROR.PARAM,
          `Failed to enable static nat for the ip address ${pip.status?.address}: it is already assigned to VM ${current}`,
        );
      const onAddress = (r: { metadata: { namespace?: string }; spec: { publicIPAddress: string } }) =>
        r.metadata.namespace === pip.metadata.namespace && r.spec.publicIPAddress === pip.metadata.name;
      if (api.loadBalancerRules.list().some(onAddress))
        throw new ApiError(
          ERROR.PARAM,
          `Failed to enable static nat for the ip address ${pip.status?.address}: it has load balancing rules`,
        );
      const other = api.publicIPAddresses
        .list()
        .find(
          (p) =>
            p.metadata.namespace === vm.metadata.namespace &&
            p.metadata.uid !== pip.metadata.uid &&
            p.spec.staticNat?.virtualMachine === vm.metadata.name,
        );
      if (other)
        throw new ApiError(
          ERROR.PARAM,
          `Failed to enable static nat: VM ${vm.metadata.name} already has static nat on ip address ${other.status?.address ?? other.metadata.name}`,
        );
      const forwards = api.portForwardingRules.list().filter(onAddress);
      if (forwards.length > 0)
        throw new ApiError(
          ERROR.PARAM,
          `Failed to enable static nat for the ip address ${pip.status?.address}: it has port forwarding rules`,
        );
      await patchFromCurrent(call, Resources.publicIPAddresses, pip, () => ({
        spec: { staticNat: { virtualMachine: vm.metadata.name as string } },
      }));
      return { success: true };
    },
  },
  disableStaticNat: {
    async: true,
    async handler(call) {
      const pip = await ownedById(
        call,
        call.api.publicIPAddresses,
        Resources.publicIPAddresses,
        "ipaddressid",
      );
      if (!pip.spec.staticNat)
        throw new ApiError(ERROR.PARAM, `Specified IP address id is not associated with any vm Id`);
      await patchFromCurrent(call, Resources.publicIPAddresses, pip, () => ({ spec: { staticNat: null } }));
      return jobAnswer(call, "disableStaticNat", { ...pip, kind: KIND });
    },
    // Over once the router no longer maps the address.
    outcome: (job, api) => {
      const pip = jobObject(api.publicIPAddresses, job, job.spec.target?.uid);
      if (!pip) return { result: { success: true } };
      const router = api.network(pip.metadata.namespace as string, pip.spec.network)?.status?.router;
      const mapped = router?.staticNat.some((n) => n.publicAddress === pip.status?.address) ?? false;
      return pip.spec.staticNat || mapped ? undefined : { result: { success: true } };
    },
  },
  listIpForwardingRules: {
    async handler(call) {
      const ipId = call.params.uuid("ipaddressid");
      const vmId = call.params.uuid("virtualmachineid");
      const views = (await namespaced(call, call.api.publicIPAddresses, Resources.publicIPAddresses))
        .filter((pip) => pip.spec.staticNat !== undefined)
        .filter((pip) => !ipId || pip.metadata.uid === ipId)
        .filter(
          (pip) =>
            !vmId ||
            call.api.vms.get(`${pip.metadata.namespace}/${pip.spec.staticNat?.virtualMachine}`)?.metadata
              .uid === vmId,
        )
        .map((pip) => staticNatView(pip, call.api) as Json);
      return page(call, "ipforwardingrule", views);
    },
  },
};

// CloudStack's load-balancer rules on public addresses (issue 17): one LoadBalancerRule per rule in
// the caller's account, spread by the network's router in the kernel (roundrobin or source; leastconn
// needs a proxy that counts connections and is refused). createLoadBalancerRule opens its port in
// the firewall unless openfirewall=false, as CloudStack does; assignToLoadBalancerRule and
// removeFromLoadBalancerRule change its VMs, and their jobs end once the router spreads over exactly
// the VMs asked for.
import { type LoadBalancerRule, MAX_BALANCED_VMS, Resources, type VirtualMachine } from "../crds/index.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { jobAnswer, jobObject, type Outcome } from "./jobs.ts";
import { namespaced, ownedById, ownedByUid, page, patchFromCurrent } from "./listing.ts";
import {
  cidrs,
  createOutcome,
  createRule,
  deleteCommand,
  openFirewall,
  port,
  publicAddress,
  type RuleKind,
  rulesListed,
} from "./network-rule-commands.ts";
import { guestAddressOn, requireVmOnNetwork } from "./public-address-commands.ts";
import { loadBalancerRuleView } from "./public-address-views.ts";
import { virtualMachineView } from "./views.ts";

const ALGORITHMS = ["roundrobin", "source"] as const;
type Algorithm = (typeof ALGORITHMS)[number];

const LOAD_BALANCERS: RuleKind<LoadBalancerRule> = {
  kind: "LoadBalancerRule",
  type: Resources.loadBalancerRules,
  informer: (api) => api.loadBalancerRules,
  view: loadBalancerRuleView,
  itemKey: "loadbalancer",
};

function algorithm(call: Call): Algorithm | undefined {
  const value = call.params.get("algorithm")?.toLowerCase();
  if (value === undefined) return undefined;
  if (!(ALGORITHMS as readonly string[]).includes(value))
    throw new ApiError(
      ERROR.PARAM,
      `Invalid algorithm ${value}: Stratus balances in the router's kernel, by roundrobin or source (leastconn needs a proxy counting connections)`,
    );
  return value as Algorithm;
}

function refuseIn(call: Call, ...names: string[]): void {
  for (const name of names)
    if (call.params.get(name) !== undefined)
      throw new ApiError(ERROR.PARAM, `Stratus does not take ${name} for ${call.params.command}`);
}

/** The VMs `virtualmachineids` names, each of the rule's account and on its address's network. */
async function requestedVms(call: Call, rule: LoadBalancerRule): Promise<VirtualMachine[]> {
  refuseIn(call, "vmidipmap");
  const pip = call.api.publicAddress(rule.metadata.namespace as string, rule.spec.publicIPAddress);
  if (!pip) throw new ApiError(ERROR.PARAM, `The public address of rule ${rule.metadata.name} is gone`);
  const ids = call.params.list("virtualmachineids");
  if (ids.length === 0) throw new ApiError(ERROR.PARAM, "virtualmachineids names no VM");
  const vms: VirtualMachine[] = [];
  for (const id of ids) {
    const vm = await ownedByUid(call, call.api.vms, Resources.virtualMachines, "virtualmachineids", id);
    requireVmOnNetwork(call, vm, pip);
    vms.push(vm);
  }
  return vms;
}

/** Whether the router spreads the rule's port over exactly the addresses of the rule's VMs. */
function routerServes(api: CloudStackApi, rule: LoadBalancerRule): boolean {
  const namespace = rule.metadata.namespace as string;
  const pip = api.publicAddress(namespace, rule.spec.publicIPAddress);
  if (!pip?.status?.address) return false;
  const network = api.network(namespace, pip.spec.network);
  const served = network?.status?.router?.loadBalancers.find(
    (b) => b.publicAddress === pip.status?.address && b.publicPort === rule.spec.publicPort,
  );
  const wanted = rule.spec.virtualMachines
    .map((name) => {
      const vm = api.vm(namespace, name);
      return vm ? guestAddressOn(vm, pip.spec.network) : undefined;
    })
    .filter((a): a is string => a !== undefined)
    .sort();
  return (
    served !== undefined &&
    served.algorithm === (rule.spec.algorithm ?? "roundrobin") &&
    JSON.stringify([...served.guestAddresses].sort()) === JSON.stringify(wanted)
  );
}

/** A change of the rule's VMs or algorithm: over once the router has it. */
function appliedOutcome(job: Parameters<NonNullable<Command["outcome"]>>[0], api: CloudStackApi): Outcome {
  const rule = jobObject(api.loadBalancerRules, job, job.spec.target?.uid);
  if (!rule) return { error: { code: ERROR.INTERNAL, text: "the load balancer rule was deleted" } };
  if (!routerServes(api, rule)) return undefined;
  return job.spec.command === "updateLoadBalancerRule"
    ? { result: { loadbalancer: loadBalancerRuleView(rule, api) } }
    : { result: { success: true } };
}

function membershipCommand(command: string, change: (current: string[], vms: string[]) => string[]): Command {
  return {
    async: true,
    async handler(call) {
      const rule = await ownedById(call, call.api.loadBalancerRules, Resources.loadBalancerRules);
      const vms = (await requestedVms(call, rule)).map((vm) => vm.metadata.name as string);
      await patchFromCurrent(call, Resources.loadBalancerRules, rule, (current) => {
        const members = change(current.spec.virtualMachines, vms);
        if (members.length > MAX_BALANCED_VMS)
          throw new ApiError(
            ERROR.PARAM,
            `A load balancer rule spreads over at most ${MAX_BALANCED_VMS} VMs`,
          );
        return { spec: { virtualMachines: members } };
      });
      return jobAnswer(call, command, { ...rule, kind: LOAD_BALANCERS.kind });
    },
    outcome: appliedOutcome,
  };
}

export const LOAD_BALANCER_COMMANDS: Record<string, Command> = {
  createLoadBalancerRule: {
    async: true,
    async handler(call) {
      const { params, api } = call;
      refuseIn(call, "zoneid");
      if (!params.uuid("publicipid"))
        throw new ApiError(
          ERROR.PARAM,
          "publicipid is required: Stratus balances on an isolated network's public address",
        );
      const pip = await publicAddress(call, "publicipid");
      const networkId = params.uuid("networkid");
      if (
        networkId &&
        api.network(pip.metadata.namespace as string, pip.spec.network)?.metadata.uid !== networkId
      )
        throw new ApiError(
          ERROR.PARAM,
          `ip address ${pip.status?.address} does not belong to network ${networkId}`,
        );
      const protocol = (params.get("protocol") ?? "tcp").toLowerCase();
      if (protocol !== "tcp" && protocol !== "udp")
        throw new ApiError(ERROR.PARAM, `Invalid protocol ${protocol}: Stratus balances tcp or udp`);
      const name = params.required("name");
      if (name.length > 255) throw new ApiError(ERROR.PARAM, "name is at most 255 characters");
      const description = params.get("description");
      if (description !== undefined && description.length > 4096)
        throw new ApiError(ERROR.PARAM, "description is at most 4096 characters");
      const chosen = algorithm(call) ?? "roundrobin";
      const publicPort = port(call, "publicport");
      const privatePort = port(call, "privateport");
      const open = params.flag("openfirewall", true);
      if (!open && params.get("cidrlist") !== undefined)
        throw new ApiError(ERROR.PARAM, "cidrlist is the opened firewall's: it needs openfirewall=true");
      const sources = cidrs(call);
      const rule = await createRule(call, LOAD_BALANCERS, pip, "lb-", {
        protocol,
        displayName: name,
        ...(description ? { description } : {}),
        publicPort,
        privatePort,
        algorithm: chosen,
        virtualMachines: [],
      });
      if (open)
        await openFirewall(call, rule, pip, protocol, { start: publicPort, end: publicPort }, sources);
      return jobAnswer(call, "createLoadBalancerRule", { ...rule, kind: LOAD_BALANCERS.kind });
    },
    outcome: createOutcome(LOAD_BALANCERS),
  },
  deleteLoadBalancerRule: deleteCommand(LOAD_BALANCERS, "deleteLoadBalancerRule"),
  listLoadBalancerRules: {
    async handler(call) {
      const { params, api } = call;
      const vmId = params.uuid("virtualmachineid");
      const zoneId = params.uuid("zoneid");
      const rules = (
        await rulesListed(call, api.loadBalancerRules, Resources.loadBalancerRules, {
          addressParameter: "publicipid",
          nameOf: (rule) => rule.spec.displayName,
        })
      )
        .filter(
          (rule) =>
            !vmId ||
            rule.spec.virtualMachines.some(
              (vm) => api.vm(rule.metadata.namespace as string, vm)?.metadata.uid === vmId,
            ),
        )
        .filter((rule) => {
          if (!zoneId) return true;
          const pip = api.publicAddress(rule.metadata.namespace as string, rule.spec.publicIPAddress);
          const network = pip ? api.network(pip.metadata.namespace as string, pip.spec.network) : undefined;
          return network !== undefined && api.zone(network.spec.zone)?.metadata.uid === zoneId;
        });
      return page(
        call,
        LOAD_BALANCERS.itemKey,
        rules.map((rule) => loadBalancerRuleView(rule, api)),
      );
    },
  },
  assignToLoadBalancerRule: membershipCommand("assignToLoadBalancerRule", (current, vms) => [
    ...new Set([...current, ...vms]),
  ]),
  removeFromLoadBalancerRule: membershipCommand("removeFromLoadBalancerRule", (current, vms) =>
    current.filter((vm) => !vms.includes(vm)),
  ),
  updateLoadBalancerRule: {
    async: true,
    async handler(call) {
      refuseIn(call, "protocol", "cidrlist", "customid");
      const rule = await ownedById(call, call.api.loadBalancerRules, Resources.loadBalancerRules);
      const chosen = algorithm(call);
      const name = call.params.get("name");
      const description = call.params.get("description");
      if ((name?.length ?? 0) > 255 || (description?.length ?? 0) > 4096)
        throw new ApiError(ERROR.PARAM, "name is at most 255 characters, description 4096");
      await patchFromCurrent(call, Resources.loadBalancerRules, rule, () => ({
        spec: {
          ...(chosen ? { algorithm: chosen } : {}),
          ...(name !== undefined ? { displayName: name } : {}),
          ...(description !== undefined ? { description } : {}),
        },
      }));
      return jobAnswer(call, "updateLoadBalancerRule", { ...rule, kind: LOAD_BALANCERS.kind });
    },
    outcome: appliedOutcome,
  },
  listLoadBalancerRuleInstances: {
    async handler(call) {
      const { api } = call;
      const rule = await ownedById(call, api.loadBalancerRules, Resources.loadBalancerRules);
      const namespace = rule.metadata.namespace as string;
      const pip = api.publicAddress(namespace, rule.spec.publicIPAddress);
      const applied = call.params.flag("applied", true);
      // applied=false: the VMs of the address's network the rule does not spread over yet.
      const vms = (await namespaced(call, api.vms, Resources.virtualMachines))
        .filter((vm) => vm.metadata.namespace === namespace)
        .filter((vm) => (vm.spec.nics ?? []).some((nic) => nic.network === pip?.spec.network))
        .filter((vm) => rule.spec.virtualMachines.includes(vm.metadata.name as string) === applied);
      return page(
        call,
        "loadbalancerruleinstance",
        vms.map((vm) => virtualMachineView(vm, api) as Json),
      );
    },
  },
};

// CloudStack's port-forwarding and firewall rules on public addresses (issue 17), one object per
// rule in the caller's account. The network controller accepts a rule or refuses it in CloudStack's
// words (a port range used twice, a port forward on a static-NAT address); the create job ends with
// that verdict, and a refused rule is deleted, as CloudStack keeps none. createPortForwardingRule
// opens its ports in the firewall too unless openfirewall=false, as CloudStack does; that firewall
// rule belongs to the port forward and goes with it.
import {
  type EgressFirewallRule,
  type FirewallRule,
  type LoadBalancerRule,
  type PortForwardingRule,
  type PublicIPAddress,
  Resources,
} from "../crds/index.ts";
import { isRouted } from "../crds/routing.ts";
import { isNotFound, type ResourceType } from "../runtime/client.ts";
import { findCondition } from "../runtime/conditions.ts";
import type { Informer } from "../runtime/informer.ts";
import { ownerReference } from "../runtime/objects.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { jobAnswer, jobObject, type Outcome } from "./jobs.ts";
import { filtered, inAccount, namespaced, ownedById, page, requireOwnAccount } from "./listing.ts";
import { requireVmOnNetwork } from "./public-address-commands.ts";
import { egressFirewallRuleView, firewallRuleView, portForwardingRuleView } from "./public-address-views.ts";

/** The rules on a public address. */
type AddressRule = PortForwardingRule | FirewallRule | LoadBalancerRule;
type NetworkRule = AddressRule | EgressFirewallRule;

const IPV4_CIDR =
  /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\/([12]?\d|3[0-2])$/;
/** As the CRD's limit: a firewall rule names at most this many source networks. */
const MAX_CIDRS = 16;

export function port(call: Call, name: string, fallback?: number): number {
  const value = call.params.integer(name) ?? fallback;
  if (value === undefined) return Number(call.params.required(name));
  if (value < 1 || value > 65_535)
    throw new ApiError(ERROR.PARAM, `Invalid port ${value} for ${name}: 1 to 65535`);
  return value;
}

function portRange(call: Call, start: string, end: string) {
  const first = port(call, start);
  const last = port(call, end, first);
  if (last < first) throw new ApiError(ERROR.PARAM, `${end} ${last} is before ${start} ${first}`);
  return { start: first, end: last };
}

/** A list of CIDRs (`cidrlist` unless named), checked; empty when not given. */
function cidrList(call: Call, parameter: string): string[] {
  const list = call.params.list(parameter);
  if (list.length > MAX_CIDRS)
    throw new ApiError(ERROR.PARAM, `${parameter} names ${list.length} networks; at most ${MAX_CIDRS}`);
  for (const cidr of list) if (!IPV4_CIDR.test(cidr)) throw new ApiError(ERROR.PARAM, `Invalid cidr ${cidr}`);
  return list;
}

/** The sources a firewall rule allows: `cidrlist`, or anywhere. */
export function cidrs(call: Call): string[] {
  const list = cidrList(call, "cidrlist");
  return list.length > 0 ? list : ["0.0.0.0/0"];
}

/** What the commands of one kind of rule need to know of it. */
export interface RuleKind<T extends NetworkRule> {
  kind: T["kind"];
  type: ResourceType;
  informer: (api: CloudStackApi) => Informer<T>;
  view: (rule: T, api: CloudStackApi) => Json;
  /** The list item's and the job result's key. */
  itemKey: string;
}

export const PORT_FORWARDS: RuleKind<PortForwardingRule> = {
  kind: "PortForwardingRule",
  type: Resources.portForwardingRules,
  informer: (api) => api.portForwardingRules,
  view: portForwardingRuleView,
  itemKey: "portforwardingrule",
};

export const FIREWALL: RuleKind<FirewallRule> = {
  kind: "FirewallRule",
  type: Resources.firewallRules,
  informer: (api) => api.firewallRules,
  view: firewallRuleView,
  itemKey: "firewallrule",
};

const EGRESS: RuleKind<EgressFirewallRule> = {
  kind: "EgressFirewallRule",
  type: Resources.egressFirewallRules,
  informer: (api) => api.egressFirewallRules,
  view: egressFirewallRuleView,
  itemKey: "firewallrule",
};

/** The verdicts that end a create job: the rest (a VM still getting its address) pass. */
const REFUSALS = new Set([
  "NetworkRuleConflict",
  "StaticNatEnabled",
  "RuleLimitExceeded",
  "PortRangeRemapped",
  "PublicIPAddressNotFound",
]);

/** A create job's end: Active ends it; a conflict fails it; a VM still getting its address waits. */
export function createOutcome<T extends NetworkRule>(rules: RuleKind<T>): NonNullable<Command["outcome"]> {
  return (job, api): Outcome => {
    const rule = jobObject(rules.informer(api), job, job.spec.target?.uid);
    if (!rule) return { error: { code: ERROR.INTERNAL, text: "the rule was deleted" } };
    const accepted = findCondition(rule.status?.conditions, "Accepted");
    if (accepted?.status === "True") return { result: { [rules.itemKey]: rules.view(rule, api) } };
    if (accepted?.status === "False" && REFUSALS.has(accepted.reason))
      return { error: { code: ERROR.PARAM, text: accepted.message } };
    return accepted ? { waitingFor: accepted.message } : undefined;
  };
}

/** delete<Rule>: the job ends once the rule is gone (a port forward's own firewall rule with it). */
export function deleteCommand<T extends NetworkRule>(rules: RuleKind<T>, command: string): Command {
  return {
    async: true,
    async handler(call) {
      const rule = await ownedById(call, rules.informer(call.api), rules.type);
      const answer = await jobAnswer(call, command, { ...rule, kind: rules.kind });
      await call.caller.client
        .delete(rules.type, rule.metadata.name as string, rule.metadata.namespace)
        .catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
      return answer;
    },
    outcome: (job, api) =>
      jobObject(rules.informer(api), job, job.spec.target?.uid) ? undefined : { result: { success: true } },
  };
}

function listCommand<T extends AddressRule>(rules: RuleKind<T>): Command {
  return {
    async handler(call) {
      const listed = await rulesListed(call, rules.informer(call.api), rules.type);
      return page(
        call,
        rules.itemKey,
        listed.map((rule) => rules.view(rule, call.api)),
      );
    },
  };
}

/**
 * The rules of the caller's reach on the address (`addressParameter`) and `networkid`, with the
 * list filters; `nameOf` is the rule's CloudStack name where it has one of its own.
 */
export async function rulesListed<T extends AddressRule>(
  call: Call,
  informer: Informer<T>,
  type: ResourceType,
  options: { addressParameter?: string; nameOf?: (rule: T) => string | undefined } = {},
): Promise<T[]> {
  const { api, params } = call;
  const ipId = params.uuid(options.addressParameter ?? "ipaddressid");
  const networkId = params.uuid("networkid");
  const addressOf = (rule: T) =>
    api.publicIPAddresses.get(`${rule.metadata.namespace}/${rule.spec.publicIPAddress}`);
  return inAccount(call, filtered(call, await namespaced(call, informer, type), undefined, options.nameOf))
    .filter((rule) => !ipId || addressOf(rule)?.metadata.uid === ipId)
    .filter((rule) => {
      const pip = addressOf(rule);
      return (
        !networkId ||
        (pip !== undefined &&
          api.network(pip.metadata.namespace as string, pip.spec.network)?.metadata.uid === networkId)
      );
    });
}

/** What a firewall or egress rule matches: protocol and ports, as CloudStack takes them. */
function firewallMatch(call: Call): {
  protocol: FirewallRule["spec"]["protocol"];
  ports: { ports?: { start: number; end: number } };
} {
  const { params } = call;
  const protocol = params.required("protocol").toLowerCase();
  if (protocol !== "tcp" && protocol !== "udp" && protocol !== "icmp" && protocol !== "all")
    throw new ApiError(ERROR.PARAM, `Invalid protocol ${protocol}: tcp, udp, icmp or all`);
  for (const icmp of ["icmptype", "icmpcode"]) {
    const value = params.integer(icmp);
    if (value !== undefined && value !== -1)
      throw new ApiError(ERROR.PARAM, `Stratus opens every ICMP type and code: ${icmp} must be -1 or absent`);
  }
  const type = params.get("type");
  if (type && type.toLowerCase() !== "user")
    throw new ApiError(ERROR.PARAM, `Invalid firewall rule type ${type}`);
  const hasPorts = params.get("startport") !== undefined;
  if (hasPorts && protocol !== "tcp" && protocol !== "udp")
    throw new ApiError(ERROR.PARAM, `startport and endport are for tcp and udp rules, not ${protocol}`);
  return { protocol, ports: hasPorts ? { ports: portRange(call, "startport", "endport") } : {} };
}

/** Makes a rule on `pip` as the caller, owned by the address so it goes with it. */
export function createRule<T extends AddressRule>(
  call: Call,
  rules: RuleKind<T>,
  pip: PublicIPAddress,
  namePrefix: string,
  spec: Omit<T["spec"], "publicIPAddress">,
): Promise<T> {
  return call.caller.client.create<T>(rules.type, {
    apiVersion: "stratus.io/v1alpha1",
    kind: rules.kind,
    metadata: {
      generateName: namePrefix,
      namespace: pip.metadata.namespace as string,
      ownerReferences: [ownedBy(pip)],
    },
    spec: { publicIPAddress: pip.metadata.name as string, ...spec },
  } as unknown as T);
}

/**
 * CloudStack's openfirewall: a firewall rule for the ports a port forward or load balancer takes,
 * owned by that rule so it goes with it.
 */
export async function openFirewall(
  call: Call,
  owner: PortForwardingRule | LoadBalancerRule,
  pip: PublicIPAddress,
  protocol: "tcp" | "udp",
  ports: { start: number; end: number },
  sources: string[],
): Promise<void> {
  await call.caller.client.create<FirewallRule>(Resources.firewallRules, {
    apiVersion: "stratus.io/v1alpha1",
    kind: "FirewallRule",
    metadata: {
      generateName: `${owner.metadata.name}-`,
      namespace: pip.metadata.namespace as string,
      ownerReferences: [
        {
          apiVersion: "stratus.io/v1alpha1",
          kind: owner.kind,
          name: owner.metadata.name as string,
          uid: owner.metadata.uid as string,
        },
      ],
    },
    spec: { publicIPAddress: pip.metadata.name as string, protocol, ports, cidrs: sources },
  });
}

/** A rule goes with its public address, as CloudStack removes an address's rules when it is released. */
const ownedBy = (pip: PublicIPAddress) => ({
  apiVersion: "stratus.io/v1alpha1",
  kind: "PublicIPAddress",
  name: pip.metadata.name as string,
  uid: pip.metadata.uid as string,
});

export async function publicAddress(call: Call, parameter = "ipaddressid"): Promise<PublicIPAddress> {
  requireOwnAccount(call);
  return ownedById(call, call.api.publicIPAddresses, Resources.publicIPAddresses, parameter);
}

export const NETWORK_RULE_COMMANDS: Record<string, Command> = {
  createPortForwardingRule: {
    async: true,
    async handler(call) {
      const { api, params } = call;
      const pip = await publicAddress(call);
      const protocol = params.required("protocol").toLowerCase();
      if (protocol !== "tcp" && protocol !== "udp")
        throw new ApiError(ERROR.PARAM, `Invalid protocol ${protocol}: port forwarding takes tcp or udp`);
      const publicPort = portRange(call, "publicport", "publicendport");
      const privatePort = portRange(call, "privateport", "privateendport");
      if (publicPort.end - publicPort.start !== privatePort.end - privatePort.start)
        throw new ApiError(ERROR.PARAM, "The public and private port ranges must be the same length");
      if (publicPort.start !== publicPort.end && publicPort.start !== privatePort.start)
        throw new ApiError(ERROR.PARAM, "Stratus forwards a port range to the same ports of the VM only");
      const vm = await ownedById(call, api.vms, Resources.virtualMachines, "virtualmachineid");
      requireVmOnNetwork(call, vm, pip);
      if (pip.spec.staticNat)
        throw new ApiError(
          ERROR.PARAM,
          `Can't create port forwarding rule: ip address ${pip.status?.address} has static nat enabled.`,
        );
      const firewallCidrs = cidrs(call);
      const rule = await createRule(call, PORT_FORWARDS, pip, "pf-", {
        protocol,
        publicPort,
        privatePort,
        virtualMachine: vm.metadata.name as string,
      });
      if (params.flag("openfirewall", true))
        await openFirewall(call, rule, pip, protocol, publicPort, firewallCidrs);
      return jobAnswer(call, "createPortForwardingRule", { ...rule, kind: "PortForwardingRule" });
    },
    outcome: createOutcome(PORT_FORWARDS),
  },
  deletePortForwardingRule: deleteCommand(PORT_FORWARDS, "deletePortForwardingRule"),
  listPortForwardingRules: listCommand(PORT_FORWARDS),
  createFirewallRule: {
    async: true,
    async handler(call) {
      const pip = await publicAddress(call);
      const { protocol, ports } = firewallMatch(call);
      const rule = await createRule(call, FIREWALL, pip, "fw-", { protocol, ...ports, cidrs: cidrs(call) });
      return jobAnswer(call, "createFirewallRule", { ...rule, kind: "FirewallRule" });
    },
    outcome: createOutcome(FIREWALL),
  },
  deleteFirewallRule: deleteCommand(FIREWALL, "deleteFirewallRule"),
  listFirewallRules: listCommand(FIREWALL),
  createEgressFirewallRule: {
    async: true,
    async handler(call) {
      requireOwnAccount(call);
      const network = await ownedById(call, call.api.networks, Resources.networks, "networkid");
      if (!isRouted(network))
        throw new ApiError(
          ERROR.PARAM,
          `Network ${network.metadata.name} has no router: egress rules are for isolated networks in a zone with a public network`,
        );
      const { protocol, ports } = firewallMatch(call);
      const sources = cidrList(call, "cidrlist");
      const destinations = cidrList(call, "destcidrlist");
      const rule = await call.caller.client.create<EgressFirewallRule>(Resources.egressFirewallRules, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "EgressFirewallRule",
        metadata: {
          generateName: "egress-",
          namespace: network.metadata.namespace as string,
          ownerReferences: [
            { ...ownerReference(Resources.networks, network, false), blockOwnerDeletion: false },
          ],
        },
        spec: {
          network: network.metadata.name as string,
          protocol,
          ...ports,
          ...(sources.length > 0 ? { sources } : {}),
          ...(destinations.length > 0 ? { destinations } : {}),
        },
      });
      return jobAnswer(call, "createEgressFirewallRule", { ...rule, kind: EGRESS.kind });
    },
    outcome: createOutcome(EGRESS),
  },
  deleteEgressFirewallRule: deleteCommand(EGRESS, "deleteEgressFirewallRule"),
  listEgressFirewallRules: {
    async handler(call) {
      const { api, params } = call;
      const networkId = params.uuid("networkid");
      const rules = inAccount(
        call,
        filtered(call, await namespaced(call, api.egressFirewallRules, Resources.egressFirewallRules)),
      ).filter(
        (rule) =>
          !networkId ||
          api.network(rule.metadata.namespace as string, rule.spec.network)?.metadata.uid === networkId,
      );
      return page(
        call,
        EGRESS.itemKey,
        rules.map((rule) => egressFirewallRuleView(rule, api)),
      );
    },
  },
};

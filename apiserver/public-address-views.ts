// CloudStack's views of an isolated network's public side: its public addresses (listPublicIpAddresses,
// associateIpAddress), static NATs as IP forwarding rules, port-forwarding and firewall rules.
import type {
  EgressFirewallRule,
  FirewallRule,
  LoadBalancerRule,
  Network,
  PortForwardingRule,
  PublicIPAddress,
  VirtualMachine,
  Zone,
} from "../crds/index.ts";
import { compact, type Json } from "./envelope.ts";

/** What the views look up by name in the object's account. */
export interface PublicSide {
  zone(name: string): Zone | undefined;
  network(namespace: string, name: string): Network | undefined;
  vm(namespace: string, name: string): VirtualMachine | undefined;
  publicAddress(namespace: string, name: string): PublicIPAddress | undefined;
}

const uid = (object: { metadata: { uid?: string | undefined } } | undefined) => object?.metadata.uid;

/** CloudStack's rule states: Add while the network controller has not taken it, Active once it has. */
function ruleState(rule: { status?: { conditions?: { type: string; status: string }[] } }): string {
  const accepted = rule.status?.conditions?.find((c) => c.type === "Accepted");
  return accepted?.status === "True" ? "Active" : accepted?.status === "False" ? "Error" : "Add";
}

const vmFields = (side: PublicSide, namespace: string, name: string | undefined) => {
  const vm = name ? side.vm(namespace, name) : undefined;
  return {
    virtualmachineid: uid(vm),
    virtualmachinename: name,
    virtualmachinedisplayname: vm?.spec.displayName ?? name,
  };
};

export function publicAddressView(pip: PublicIPAddress, side: PublicSide): Json {
  const namespace = pip.metadata.namespace as string;
  const network = side.network(namespace, pip.spec.network);
  const zone = network ? side.zone(network.spec.zone) : undefined;
  const allocated = pip.status?.conditions?.find((c) => c.type === "Allocated")?.status === "True";
  const staticNatVm = pip.spec.staticNat?.virtualMachine;
  const guestAddress = network?.status?.router?.staticNat.find(
    (n) => n.publicAddress === pip.status?.address,
  )?.guestAddress;
  return compact({
    id: uid(pip),
    ipaddress: pip.status?.address,
    allocated: pip.metadata.creationTimestamp,
    zoneid: uid(zone),
    zonename: network?.spec.zone,
    issourcenat: pip.status?.sourceNat ?? false,
    account: namespace,
    domain: "ROOT",
    forvirtualnetwork: true,
    isstaticnat: staticNatVm !== undefined,
    issystem: false,
    isportable: false,
    associatednetworkid: uid(network),
    associatednetworkname: pip.spec.network,
    networkid: uid(network),
    state: pip.metadata.deletionTimestamp ? "Releasing" : allocated ? "Allocated" : "Allocating",
    ...(staticNatVm ? { ...vmFields(side, namespace, staticNatVm), vmipaddress: guestAddress } : {}),
    fordisplay: true,
    tags: [],
  });
}

/** A static NAT as listIpForwardingRules shows it. */
export function staticNatView(pip: PublicIPAddress, side: PublicSide): Json {
  const namespace = pip.metadata.namespace as string;
  return compact({
    id: uid(pip),
    ipaddressid: uid(pip),
    ipaddress: pip.status?.address,
    protocol: "NAT",
    state: pip.status?.conditions?.find((c) => c.type === "StaticNat")?.status === "True" ? "Active" : "Add",
    ...vmFields(side, namespace, pip.spec.staticNat?.virtualMachine),
    tags: [],
  });
}

export function portForwardingRuleView(rule: PortForwardingRule, side: PublicSide): Json {
  const namespace = rule.metadata.namespace as string;
  const pip = side.publicAddress(namespace, rule.spec.publicIPAddress);
  const network = pip ? side.network(namespace, pip.spec.network) : undefined;
  const vm = side.vm(namespace, rule.spec.virtualMachine);
  return compact({
    id: uid(rule),
    protocol: rule.spec.protocol,
    publicport: String(rule.spec.publicPort.start),
    publicendport: String(rule.spec.publicPort.end),
    privateport: String(rule.spec.privatePort.start),
    privateendport: String(rule.spec.privatePort.end),
    ipaddressid: uid(pip),
    ipaddress: pip?.status?.address,
    ...vmFields(side, namespace, rule.spec.virtualMachine),
    vmguestip: vm?.status?.nics?.find((n) => n.network === pip?.spec.network)?.ipAddress,
    networkid: uid(network),
    state: ruleState(rule),
    cidrlist: "",
    fordisplay: true,
    tags: [],
  });
}

export function firewallRuleView(rule: FirewallRule, side: PublicSide): Json {
  const namespace = rule.metadata.namespace as string;
  const pip = side.publicAddress(namespace, rule.spec.publicIPAddress);
  const network = pip ? side.network(namespace, pip.spec.network) : undefined;
  return compact({
    id: uid(rule),
    protocol: rule.spec.protocol,
    startport: rule.spec.ports?.start,
    endport: rule.spec.ports?.end,
    ipaddressid: uid(pip),
    ipaddress: pip?.status?.address,
    networkid: uid(network),
    cidrlist: rule.spec.cidrs.join(","),
    state: ruleState(rule),
    fordisplay: true,
    tags: [],
  });
}

export function loadBalancerRuleView(rule: LoadBalancerRule, side: PublicSide): Json {
  const namespace = rule.metadata.namespace as string;
  const pip = side.publicAddress(namespace, rule.spec.publicIPAddress);
  const network = pip ? side.network(namespace, pip.spec.network) : undefined;
  const zone = network ? side.zone(network.spec.zone) : undefined;
  return compact({
    id: uid(rule),
    name: rule.spec.displayName ?? (rule.metadata.name as string),
    description: rule.spec.description,
    publicipid: uid(pip),
    publicip: pip?.status?.address,
    publicport: String(rule.spec.publicPort),
    privateport: String(rule.spec.privatePort),
    algorithm: rule.spec.algorithm ?? "roundrobin",
    protocol: rule.spec.protocol ?? "tcp",
    networkid: uid(network),
    zoneid: uid(zone),
    zonename: network?.spec.zone,
    account: namespace,
    domain: "ROOT",
    state: ruleState(rule),
    cidrlist: "",
    fordisplay: true,
    tags: [],
  });
}

export function egressFirewallRuleView(rule: EgressFirewallRule, side: PublicSide): Json {
  const namespace = rule.metadata.namespace as string;
  const network = side.network(namespace, rule.spec.network);
  return compact({
    id: uid(rule),
    protocol: rule.spec.protocol,
    startport: rule.spec.ports?.start,
    endport: rule.spec.ports?.end,
    networkid: uid(network),
    cidrlist: (rule.spec.sources ?? [network?.spec.cidr ?? ""]).join(","),
    destcidrlist: (rule.spec.destinations ?? ["0.0.0.0/0"]).join(","),
    traffictype: "Egress",
    state: ruleState(rule),
    fordisplay: true,
    tags: [],
  });
}

// The rules of an isolated network's router, one object per rule as CloudStack and Terraform's
// CloudStack provider have them. Each names a PublicIPAddress of the account; the network
// controller accepts it (or refuses it with CloudStack's message) and the router applies the
// accepted ones. A rule never changes: delete it and create another, as in CloudStack.
import { Type } from "@sinclair/typebox";
import { defineKind, type PrinterColumn } from "../definition.ts";
import { Conditions, ObjectName, ObservedGeneration, StringEnum } from "../schema.ts";

const Port = (description: string) => Type.Integer({ minimum: 1, maximum: 65_535, description });

export const PortRange = (description: string) =>
  Type.Object(
    { start: Port("First port."), end: Port("Last port (the same as start for one port).") },
    {
      description,
      "x-kubernetes-validations": [
        { rule: "self.end >= self.start", message: "a port range must not end before it starts" },
      ],
    },
  );

const Cidrs = Type.Array(
  Type.String({
    maxLength: 18,
    description: "An IPv4 network in CIDR notation.",
    "x-kubernetes-validations": [
      {
        rule: "isCIDR(self) && cidr(self).ip().family() == 4",
        message: "must be an IPv4 CIDR such as 0.0.0.0/0",
      },
    ],
  }),
  {
    minItems: 1,
    maxItems: 16,
    description: "Source networks the rule allows.",
    "x-kubernetes-list-type": "atomic",
  },
);

const unchangeable = (kind: string) => ({
  rule: "self == oldSelf",
  message: `a ${kind} cannot be changed; delete it and create another`,
});

const ruleStatus = Type.Object(
  {
    observedGeneration: ObservedGeneration,
    conditions: Conditions(
      "Accepted: the network controller took the rule into its router's configuration (False: why not, in CloudStack's words).",
    ),
  },
  { description: "The rule as the network controller sees it." },
);

/** What every rule shows first: the public address it is on and its protocol. */
const addressColumns: PrinterColumn[] = [
  { name: "PublicIP", type: "string", jsonPath: ".spec.publicIPAddress", description: "Public address." },
  { name: "Protocol", type: "string", jsonPath: ".spec.protocol", description: "Protocol." },
];

const stateColumns: PrinterColumn[] = [
  {
    name: "State",
    type: "string",
    jsonPath: '.status.conditions[?(@.type=="Accepted")].reason',
    description: "Active, or why the rule is refused.",
  },
  { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp", description: "Time since creation." },
];

const PublicAddressRef = ObjectName({ description: "The account's PublicIPAddress the rule is on." });

export const PortForwardingRuleKind = defineKind({
  kind: "PortForwardingRule",
  plural: "portforwardingrules",
  singular: "portforwardingrule",
  shortNames: ["pfr"],
  scope: "Namespaced",
  description:
    "Forwards a public address's ports to a VM of its network (CloudStack's createPortForwardingRule). Traffic passes only where a FirewallRule on the address allows it.",
  spec: Type.Object(
    {
      publicIPAddress: PublicAddressRef,
      protocol: StringEnum(["tcp", "udp"] as const, { description: "The transport protocol." }),
      publicPort: PortRange("The public ports."),
      privatePort: PortRange("The VM's ports; as many as the public ones."),
      virtualMachine: ObjectName({ description: "The VM the ports go to, on the address's network." }),
    },
    {
      description: "The rule.",
      "x-kubernetes-validations": [
        unchangeable("PortForwardingRule"),
        {
          rule: "self.publicPort.end - self.publicPort.start == self.privatePort.end - self.privatePort.start",
          message: "the public and private port ranges must be the same length",
        },
      ],
    },
  ),
  status: ruleStatus,
  printerColumns: [
    ...addressColumns,
    {
      name: "Public",
      type: "integer",
      jsonPath: ".spec.publicPort.start",
      description: "First public port.",
    },
    {
      name: "Private",
      type: "integer",
      jsonPath: ".spec.privatePort.start",
      description: "First private port.",
    },
    { name: "VM", type: "string", jsonPath: ".spec.virtualMachine", description: "VM." },
    ...stateColumns,
  ],
  selectableFields: [".spec.publicIPAddress"],
});

export const FirewallRuleKind = defineKind({
  kind: "FirewallRule",
  plural: "firewallrules",
  singular: "firewallrule",
  shortNames: ["fwr"],
  scope: "Namespaced",
  description:
    "Lets traffic from some networks in to a public address (CloudStack's createFirewallRule). Nothing from outside reaches a VM unless a rule allows it.",
  spec: Type.Object(
    {
      publicIPAddress: PublicAddressRef,
      protocol: StringEnum(["tcp", "udp", "icmp", "all"] as const, { description: "The protocol allowed." }),
      ports: Type.Optional(PortRange("The destination ports allowed (tcp and udp); every port when empty.")),
      cidrs: Cidrs,
    },
    {
      description: "The rule.",
      "x-kubernetes-validations": [
        unchangeable("FirewallRule"),
        {
          rule: "!has(self.ports) || self.protocol == 'tcp' || self.protocol == 'udp'",
          message: "ports are for tcp and udp rules only",
        },
      ],
    },
  ),
  status: ruleStatus,
  printerColumns: [
    ...addressColumns,
    { name: "Port", type: "integer", jsonPath: ".spec.ports.start", description: "First port." },
    ...stateColumns,
  ],
  selectableFields: [".spec.publicIPAddress"],
});

/** As many VMs as one load-balancer rule spreads over. */
export const MAX_BALANCED_VMS = 64;

export const LoadBalancerRuleKind = defineKind({
  kind: "LoadBalancerRule",
  plural: "loadbalancerrules",
  singular: "loadbalancerrule",
  shortNames: ["lbr"],
  scope: "Namespaced",
  description:
    "Spreads a public address's port over VMs of its network (CloudStack's createLoadBalancerRule), by the router's kernel: roundrobin per connection, or by source address. Traffic passes only where a FirewallRule on the address allows it.",
  spec: Type.Object(
    {
      publicIPAddress: ObjectName({
        description: "The account's PublicIPAddress the rule is on.",
        "x-kubernetes-validations": [
          { rule: "self == oldSelf", message: "publicIPAddress cannot be changed" },
        ],
      }),
      protocol: Type.Optional(
        StringEnum(["tcp", "udp"] as const, {
          default: "tcp",
          description: "The transport protocol.",
          "x-kubernetes-validations": [{ rule: "self == oldSelf", message: "protocol cannot be changed" }],
        }),
      ),
      displayName: Type.Optional(
        Type.String({ maxLength: 255, description: "CloudStack's name of the rule." }),
      ),
      description: Type.Optional(Type.String({ maxLength: 4096, description: "What the rule is for." })),
      publicPort: Port("The public port."),
      privatePort: Port("The VMs' port."),
      algorithm: Type.Optional(
        StringEnum(["roundrobin", "source"] as const, {
          default: "roundrobin",
          description:
            "roundrobin: each new connection to the next VM; source: a source address always to the same VM. (CloudStack's leastconn needs a proxy that counts connections; Stratus balances in the kernel and refuses it.)",
        }),
      ),
      virtualMachines: Type.Array(ObjectName({ description: "A VM of the address's network." }), {
        maxItems: MAX_BALANCED_VMS,
        description:
          "The VMs the port is spread over (assignToLoadBalancerRule, removeFromLoadBalancerRule).",
        "x-kubernetes-list-type": "set",
      }),
    },
    {
      description: "The rule. Its VMs and algorithm may change; its address, protocol and ports may not.",
      "x-kubernetes-validations": [
        {
          rule: "self.publicPort == oldSelf.publicPort && self.privatePort == oldSelf.privatePort",
          message: "the ports of a LoadBalancerRule cannot be changed; delete it and create another",
        },
      ],
    },
  ),
  status: ruleStatus,
  printerColumns: [
    ...addressColumns,
    { name: "Public", type: "integer", jsonPath: ".spec.publicPort", description: "Public port." },
    { name: "Private", type: "integer", jsonPath: ".spec.privatePort", description: "Private port." },
    {
      name: "Algorithm",
      type: "string",
      jsonPath: ".spec.algorithm",
      description: "How connections spread.",
    },
    ...stateColumns,
  ],
  selectableFields: [".spec.publicIPAddress"],
});

export const EgressFirewallRuleKind = defineKind({
  kind: "EgressFirewallRule",
  plural: "egressfirewallrules",
  singular: "egressfirewallrule",
  shortNames: ["efr"],
  scope: "Namespaced",
  description:
    "Traffic from an isolated network's guests out through its router (CloudStack's createEgressFirewallRule): blocked where the network's egressPolicy is Allow, allowed where it is Deny.",
  spec: Type.Object(
    {
      network: ObjectName({ description: "The account's isolated Network the rule is on." }),
      protocol: StringEnum(["tcp", "udp", "icmp", "all"] as const, { description: "The protocol." }),
      ports: Type.Optional(PortRange("The destination ports (tcp and udp); every port when empty.")),
      sources: Type.Optional({
        ...Cidrs,
        description:
          "The guests' side: source networks within the network (CloudStack's cidrlist); the whole network when empty.",
      }),
      destinations: Type.Optional({
        ...Cidrs,
        description: "Where to (CloudStack's destcidrlist); anywhere when empty.",
      }),
    },
    {
      description: "The rule.",
      "x-kubernetes-validations": [
        unchangeable("EgressFirewallRule"),
        {
          rule: "!has(self.ports) || self.protocol == 'tcp' || self.protocol == 'udp'",
          message: "ports are for tcp and udp rules only",
        },
      ],
    },
  ),
  status: ruleStatus,
  printerColumns: [
    { name: "Network", type: "string", jsonPath: ".spec.network", description: "Network." },
    { name: "Protocol", type: "string", jsonPath: ".spec.protocol", description: "Protocol." },
    { name: "Port", type: "integer", jsonPath: ".spec.ports.start", description: "First port." },
    ...stateColumns,
  ],
  selectableFields: [".spec.network"],
});

import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { Conditions, IPv4Address, immutable, ObjectName, ObservedGeneration, StringEnum } from "../schema.ts";
import { PortRange } from "./network-rules.ts";

export const NETWORK_TYPES = ["L2", "Shared", "Isolated"] as const;

export const NetworkKind = defineKind({
  kind: "Network",
  plural: "networks",
  singular: "network",
  shortNames: ["vnet"],
  scope: "Namespaced",
  description: "A guest network: an L2 segment (VLAN or VXLAN) with optional IPv4 addressing and DHCP.",
  spec: Type.Object(
    {
      displayName: Type.Optional(Type.String({ maxLength: 255, description: "Human-readable name." })),
      zone: ObjectName({
        description: "The zone the network spans.",
        "x-kubernetes-validations": [immutable("zone")],
      }),
      type: Type.Optional(
        StringEnum(NETWORK_TYPES, {
          default: "Isolated",
          description:
            "L2: no addressing. Shared: one segment for many accounts. Isolated: one account's private segment.",
          "x-kubernetes-validations": [immutable("type")],
        }),
      ),
      cidr: Type.Optional(
        Type.String({
          maxLength: 18,
          description: "IPv4 network in CIDR notation, e.g. 10.1.1.0/24 (prefix /8 to /29).",
          "x-kubernetes-validations": [
            {
              rule: "isCIDR(self) && cidr(self).ip().family() == 4",
              message: "cidr must be an IPv4 CIDR such as 10.1.1.0/24",
            },
            {
              rule: "!isCIDR(self) || cidr(self).masked() == cidr(self)",
              message: "cidr must name the network address (e.g. 10.1.1.0/24, not 10.1.1.5/24)",
            },
            {
              rule: "!isCIDR(self) || (cidr(self).prefixLength() >= 8 && cidr(self).prefixLength() <= 29)",
              message: "cidr prefix length must be between /8 and /29",
            },
            immutable("cidr"),
          ],
        }),
      ),
      gateway: Type.Optional(
        IPv4Address({ description: "Gateway address inside the CIDR; defaults to its first address." }),
      ),
      ipRange: Type.Optional(
        Type.Object(
          {
            start: IPv4Address({ description: "First address handed to VMs." }),
            end: IPv4Address({ description: "Last address handed to VMs." }),
          },
          { description: "The part of the CIDR addresses are allocated from; the whole CIDR when empty." },
        ),
      ),
      dhcp: Type.Optional(
        Type.Boolean({ default: true, description: "Serve each VM its allocated address by DHCP." }),
      ),
      dns: Type.Optional(
        Type.Array(IPv4Address({ description: "A DNS server." }), {
          description: "DNS servers handed out by DHCP; the zone's when empty.",
          maxItems: 4,
          "x-kubernetes-list-type": "atomic",
        }),
      ),
      egressPolicy: Type.Optional(
        StringEnum(["Allow", "Deny"] as const, {
          default: "Allow",
          description:
            "An isolated network's router: guests may go out unless an EgressFirewallRule blocks it (Allow), or only where one allows it (Deny). CloudStack's egress default policy.",
        }),
      ),
      vlan: Type.Optional(
        Type.Integer({
          minimum: 1,
          maximum: 4094,
          description: "802.1Q VLAN id; allocated from the zone's range when empty.",
        }),
      ),
      vni: Type.Optional(
        Type.Integer({ minimum: 1, maximum: 16_777_215, description: "VXLAN network identifier." }),
      ),
    },
    {
      description: "What the network should be.",
      "x-kubernetes-validations": [
        { rule: "self.type == 'L2' || has(self.cidr)", message: "Shared and Isolated networks need a cidr" },
        { rule: "self.type != 'L2' || !has(self.cidr)", message: "an L2 network has no cidr" },
        {
          rule: "!has(self.gateway) || has(self.cidr)",
          message: "a gateway needs a cidr",
          fieldPath: ".gateway",
        },
        {
          rule: "!has(self.gateway) || !has(self.cidr) || !isCIDR(self.cidr) || !isIP(self.gateway) || cidr(self.cidr).containsIP(self.gateway)",
          message: "gateway must be inside the cidr",
          fieldPath: ".gateway",
        },
        {
          rule: "!has(self.ipRange) || (has(self.cidr) && isCIDR(self.cidr) && isIP(self.ipRange.start) && isIP(self.ipRange.end) && cidr(self.cidr).containsIP(self.ipRange.start) && cidr(self.cidr).containsIP(self.ipRange.end))",
          message: "ipRange must lie inside the cidr",
          fieldPath: ".ipRange",
        },
        {
          rule: "!has(self.vlan) || !has(self.vni)",
          message: "set vlan or vni, not both",
        },
        {
          rule: "has(self.vlan) == has(oldSelf.vlan) && (!has(self.vlan) || self.vlan == oldSelf.vlan)",
          message: "vlan cannot be changed after creation",
          fieldPath: ".vlan",
        },
      ],
    },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      vlan: Type.Optional(Type.Integer({ minimum: 1, maximum: 4094, description: "VLAN id in use." })),
      vni: Type.Optional(Type.Integer({ minimum: 1, maximum: 16_777_215, description: "VXLAN id in use." })),
      addresses: Type.Optional(
        Type.Object(
          {
            total: Type.Integer({ minimum: 0, description: "Addresses VMs can get." }),
            used: Type.Integer({ minimum: 0, description: "Addresses allocated." }),
            free: Type.Integer({ minimum: 0, description: "Addresses left." }),
          },
          { description: "Address usage." },
        ),
      ),
      router: Type.Optional(
        Type.Object(
          {
            host: ObjectName({ description: "The host whose agent runs the router." }),
            sourceNatAddress: IPv4Address({ description: "The network's source-NAT address." }),
            publicAddresses: Type.Array(IPv4Address({ description: "A public address." }), {
              maxItems: 64,
              description: "Every public address the router holds, the source-NAT one first.",
              "x-kubernetes-list-type": "atomic",
            }),
            staticNat: Type.Array(
              Type.Object(
                {
                  publicAddress: IPv4Address({ description: "Public address." }),
                  guestAddress: IPv4Address({ description: "The VM's address." }),
                },
                { description: "A static NAT." },
              ),
              { maxItems: 64, description: "Static NATs in force.", "x-kubernetes-list-type": "atomic" },
            ),
            portForwards: Type.Array(
              Type.Object(
                {
                  publicAddress: IPv4Address({ description: "Public address." }),
                  protocol: StringEnum(["tcp", "udp"] as const, { description: "Protocol." }),
                  publicPort: PortRange("Public ports."),
                  guestAddress: IPv4Address({ description: "The VM's address." }),
                  privatePort: PortRange("The VM's ports."),
                },
                { description: "An accepted port-forwarding rule." },
              ),
              { maxItems: 256, description: "Port forwards in force.", "x-kubernetes-list-type": "atomic" },
            ),
            loadBalancers: Type.Array(
              Type.Object(
                {
                  publicAddress: IPv4Address({ description: "Public address." }),
                  protocol: StringEnum(["tcp", "udp"] as const, { description: "Protocol." }),
                  publicPort: Type.Integer({ minimum: 1, maximum: 65_535, description: "Public port." }),
                  privatePort: Type.Integer({ minimum: 1, maximum: 65_535, description: "The VMs' port." }),
                  algorithm: StringEnum(["roundrobin", "source"] as const, {
                    description: "How connections spread.",
                  }),
                  guestAddresses: Type.Array(IPv4Address({ description: "A VM's address." }), {
                    maxItems: 64,
                    description: "The VMs' addresses.",
                    "x-kubernetes-list-type": "atomic",
                  }),
                },
                { description: "An accepted load-balancer rule." },
              ),
              { maxItems: 64, description: "Load balancers in force.", "x-kubernetes-list-type": "atomic" },
            ),
            egressDefaultAllow: Type.Optional(
              Type.Boolean({ description: "Guests go out unless a rule blocks it." }),
            ),
            egress: Type.Optional(
              Type.Array(
                Type.Object(
                  {
                    protocol: StringEnum(["tcp", "udp", "icmp", "all"] as const, {
                      description: "Protocol.",
                    }),
                    ports: Type.Optional(PortRange("Destination ports.")),
                    sources: Type.Array(Type.String({ maxLength: 18, description: "A source CIDR." }), {
                      maxItems: 16,
                      description: "Guest sources.",
                      "x-kubernetes-list-type": "atomic",
                    }),
                    destinations: Type.Array(
                      Type.String({ maxLength: 18, description: "A destination CIDR." }),
                      {
                        maxItems: 16,
                        description: "Destinations.",
                        "x-kubernetes-list-type": "atomic",
                      },
                    ),
                  },
                  { description: "An accepted egress rule." },
                ),
                { maxItems: 256, description: "Egress rules in force.", "x-kubernetes-list-type": "atomic" },
              ),
            ),
            firewall: Type.Array(
              Type.Object(
                {
                  publicAddress: IPv4Address({ description: "Public address." }),
                  protocol: StringEnum(["tcp", "udp", "icmp", "all"] as const, { description: "Protocol." }),
                  ports: Type.Optional(PortRange("Destination ports.")),
                  cidrs: Type.Array(Type.String({ maxLength: 18, description: "A source CIDR." }), {
                    maxItems: 16,
                    description: "Sources allowed.",
                    "x-kubernetes-list-type": "atomic",
                  }),
                },
                { description: "An accepted ingress firewall rule." },
              ),
              { maxItems: 256, description: "Ingress rules in force.", "x-kubernetes-list-type": "atomic" },
            ),
          },
          {
            description:
              "The isolated network's router as the network controller placed and configured it from the network's public addresses and accepted rules; the agent of the host applies it.",
          },
        ),
      ),
      conditions: Conditions(
        "Ready: the network's segment is allocated. InUse: VMs still use it (blocks deletion). RouterPlaced: the router has a host (False: why not).",
      ),
    },
    { description: "The network as observed." },
  ),
  // Each host agent watches only the networks whose router it runs.
  selectableFields: [".status.router.host"],
  printerColumns: [
    { name: "Type", type: "string", jsonPath: ".spec.type", description: "Network type." },
    { name: "CIDR", type: "string", jsonPath: ".spec.cidr", description: "IPv4 network." },
    { name: "VLAN", type: "integer", jsonPath: ".status.vlan", description: "VLAN in use." },
    {
      name: "SourceNAT",
      type: "string",
      jsonPath: ".status.router.sourceNatAddress",
      description: "Source-NAT address.",
    },
    { name: "Router", type: "string", jsonPath: ".status.router.host", description: "The router's host." },
    {
      name: "Used",
      type: "integer",
      jsonPath: ".status.addresses.used",
      description: "Allocated addresses.",
    },
    { name: "Free", type: "integer", jsonPath: ".status.addresses.free", description: "Free addresses." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
});

import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import {
  AbsolutePath,
  Conditions,
  IPv4Address,
  ObservedGeneration,
  Quantity,
  StringEnum,
} from "../schema.ts";

export const ALLOCATION_STATES = ["Enabled", "Disabled"] as const;

const DnsServers = (description: string) =>
  Type.Optional(
    Type.Array(IPv4Address({ description: "A DNS server address." }), {
      description,
      maxItems: 4,
      "x-kubernetes-list-type": "atomic",
    }),
  );

export const ZoneKind = defineKind({
  kind: "Zone",
  plural: "zones",
  singular: "zone",
  shortNames: ["zn"],
  scope: "Cluster",
  description:
    "A CloudStack zone: a set of hosts with shared networking. Hosts, networks and VMs belong to one zone.",
  spec: Type.Object(
    {
      displayName: Type.Optional(
        Type.String({ maxLength: 255, description: "Human-readable name shown by the CloudStack API." }),
      ),
      networkType: Type.Optional(
        StringEnum(["Advanced"] as const, {
          description: "The zone's network model. Advanced: isolated and shared guest networks with VLANs.",
          default: "Advanced",
        }),
      ),
      allocationState: Type.Optional(
        StringEnum(ALLOCATION_STATES, {
          description: "Disabled stops new VMs from being placed in the zone; running VMs are not touched.",
          default: "Enabled",
        }),
      ),
      dns: DnsServers("External DNS servers handed to guests by DHCP."),
      internalDns: DnsServers("DNS servers the hosts themselves use."),
      secondaryStorage: Type.Optional(
        Type.Object(
          {
            path: Type.Optional(
              AbsolutePath(
                "A directory mounted at the same place on every host of the zone (NFS in production): volumes moving between local pools are staged there, templates kept once per zone, and snapshots too unless s3 is set.",
              ),
            ),
            s3: Type.Optional(
              Type.Object(
                {
                  endpoint: Type.String({
                    maxLength: 2048,
                    pattern: "^https?://[^/?#\\s]+/?$",
                    description:
                      "The store's URL: https://s3.<region>.amazonaws.com, or an S3-compatible service's (MinIO, Ceph RGW, Garage).",
                  }),
                  bucket: Type.String({
                    minLength: 3,
                    maxLength: 63,
                    pattern: "^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
                    description: "The bucket snapshots are kept in; it must exist.",
                  }),
                  region: Type.Optional(
                    Type.String({
                      maxLength: 64,
                      pattern: "^[a-z0-9-]+$",
                      description: "The region to sign for (us-east-1 when empty).",
                    }),
                  ),
                },
                {
                  description:
                    "An S3-compatible object store that keeps the zone's volume snapshots off the hosts. Each host agent signs with its own credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a shared credentials file), which are never stored in the API.",
                },
              ),
            ),
          },
          {
            description:
              "Secondary storage: where volumes moving between local pools are staged, where templates are kept once per zone, and where snapshots live.",
            "x-kubernetes-validations": [
              { rule: "has(self.path) || has(self.s3)", message: "secondary storage needs a path or s3" },
            ],
          },
        ),
      ),
      publicNetwork: Type.Optional(
        Type.Object(
          {
            bridge: Type.String({
              minLength: 1,
              maxLength: 15,
              pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
              description:
                "The Linux bridge on every host of the zone that reaches the public network; routers plug into it. The administrator makes it, as CloudStack's public traffic label.",
            }),
            cidr: Type.String({
              maxLength: 18,
              description: "The public network, e.g. 203.0.113.0/24.",
              "x-kubernetes-validations": [
                {
                  rule: "isCIDR(self) && cidr(self).ip().family() == 4 && cidr(self).masked() == cidr(self)",
                  message: "the public cidr must be an IPv4 network such as 203.0.113.0/24",
                },
              ],
            }),
            gateway: IPv4Address({
              description: "The public network's gateway: the routers' default route.",
            }),
            ranges: Type.Array(
              Type.Object(
                {
                  start: IPv4Address({ description: "First address." }),
                  end: IPv4Address({ description: "Last address." }),
                },
                { description: "Addresses handed to accounts (CloudStack's createVlanIpRange)." },
              ),
              {
                minItems: 1,
                maxItems: 16,
                description: "The public IP ranges.",
                "x-kubernetes-list-type": "atomic",
              },
            ),
          },
          {
            description:
              "The zone's public network: isolated networks get a router with a source-NAT address from it, and accounts their public IPs (CloudStack's public traffic and public IP ranges).",
            "x-kubernetes-validations": [
              {
                rule: "!isCIDR(self.cidr) || !isIP(self.gateway) || cidr(self.cidr).containsIP(self.gateway)",
                message: "the public gateway must be inside the public cidr",
              },
              {
                rule: "!isCIDR(self.cidr) || self.ranges.all(r, isIP(r.start) && isIP(r.end) && cidr(self.cidr).containsIP(r.start) && cidr(self.cidr).containsIP(r.end))",
                message: "every public range must lie inside the public cidr",
              },
            ],
          },
        ),
      ),
      guestCidrs: Type.Optional(
        Type.Array(
          Type.String({
            maxLength: 18,
            description: "An IPv4 network in CIDR notation.",
            "x-kubernetes-validations": [
              {
                rule: "isCIDR(self) && cidr(self).ip().family() == 4 && cidr(self).masked() == cidr(self)",
                message: "each guest CIDR must be an IPv4 network such as 10.1.0.0/16",
              },
            ],
          }),
          {
            description:
              "Where tenants may put their networks (CloudStack's guestcidraddress); a Network's cidr must lie inside one. 10.0.0.0/8 when empty.",
            maxItems: 32,
            "x-kubernetes-list-type": "atomic",
          },
        ),
      ),
      vlanRange: Type.Optional(
        Type.String({
          maxLength: 9,
          pattern: "^[0-9]{1,4}-[0-9]{1,4}$",
          description:
            "VLAN ids the network controller hands to networks, e.g. 100-199 (CloudStack's zone vlan). 100-4094 when empty.",
          "x-kubernetes-validations": [
            {
              rule: "int(self.split('-')[0]) >= 1 && int(self.split('-')[1]) <= 4094 && int(self.split('-')[0]) <= int(self.split('-')[1])",
              message: "vlanRange must be FIRST-LAST with 1 <= FIRST <= LAST <= 4094",
            },
          ],
        }),
      ),
      domain: Type.Optional(
        Type.String({
          maxLength: 253,
          pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
          description: "DNS domain suffix for guests, e.g. cloud.example.com.",
        }),
      ),
    },
    { description: "What the administrator wants the zone to be." },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      hosts: Type.Optional(
        Type.Object(
          {
            total: Type.Integer({ minimum: 0, description: "Hosts registered in the zone." }),
            ready: Type.Integer({ minimum: 0, description: "Hosts whose agent heartbeat is current." }),
            schedulable: Type.Integer({ minimum: 0, description: "Ready hosts that accept new VMs." }),
          },
          { description: "Host counts, rolled up by the fabric controller." },
        ),
      ),
      capacity: Type.Optional(
        Type.Object(
          {
            cpu: Type.Integer({ minimum: 0, description: "Physical CPU cores of the ready hosts." }),
            memory: Quantity({ description: "Physical memory of the ready hosts." }),
          },
          { description: "Capacity of the zone's ready hosts." },
        ),
      ),
      allocated: Type.Optional(
        Type.Object(
          {
            cpu: Type.Integer({ minimum: 0, description: "CPU cores allocated to VMs." }),
            memory: Quantity({ description: "Memory allocated to VMs." }),
          },
          { description: "Resources allocated to VMs placed in the zone." },
        ),
      ),
      conditions: Conditions("Ready: the zone is enabled and has at least one schedulable host."),
    },
    { description: "The zone as observed by the fabric controller." },
  ),
  printerColumns: [
    { name: "Network", type: "string", jsonPath: ".spec.networkType", description: "Network model." },
    { name: "State", type: "string", jsonPath: ".spec.allocationState", description: "Allocation state." },
    { name: "Hosts", type: "integer", jsonPath: ".status.hosts.total", description: "Registered hosts." },
    { name: "Ready", type: "integer", jsonPath: ".status.hosts.ready", description: "Ready hosts." },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
});

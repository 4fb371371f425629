import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import {
  Conditions,
  IPv4Address,
  immutable,
  Labels,
  LocalName,
  MACAddress,
  NamedList,
  ObjectName,
  ObservedGeneration,
  Quantity,
  StringEnum,
} from "../schema.ts";

/** Setting it to a new value (a timestamp) asks for a restart; status.restartedAt echoes it when done. */
export const RESTART_ANNOTATION = "stratus.io/restart-requested-at";

/**
 * Set (with the reason) by the CloudStack API when a deployVirtualMachine found no host: as in
 * CloudStack the deploy was one attempt, the VM is halted and shows Error until destroyed.
 */
export const DEPLOY_FAILED_ANNOTATION = "stratus.io/deploy-failed";

/**
 * Released by the fabric after its host was lost (status.failover) and not yet placed elsewhere:
 * the orchestration places it on another host, and no agent may start it until then.
 */
export function isReleasedByFailover(vm: {
  status?: { host?: string; failover?: { from: string; restartedOn?: string } };
}): boolean {
  const failover = vm.status?.failover;
  return failover !== undefined && failover.from === vm.status?.host && failover.restartedOn === undefined;
}

/** Placed on a new host after a failover and not yet seen running there. */
export function awaitingFailoverRestart(vm: {
  status?: { host?: string; failover?: { from: string; restartedOn?: string } };
}): boolean {
  const failover = vm.status?.failover;
  return (
    failover !== undefined &&
    failover.restartedOn === undefined &&
    vm.status?.host !== undefined &&
    vm.status.host !== failover.from
  );
}

export const RUN_STRATEGIES = ["Always", "RerunOnFailure", "Manual", "Halted"] as const;

/** CloudStack's VM states, plus Pending for a VM that has no host yet. */
export const VM_STATES = [
  "Pending",
  "Starting",
  "Running",
  "Stopping",
  "Stopped",
  "Migrating",
  "Error",
  "Unknown",
  "Destroyed",
] as const;

export const VM_CONDITION_TYPES = [
  "Scheduled",
  "VolumesReady",
  "NetworksReady",
  "Ready",
  "HostReady",
] as const;

export const VirtualMachineKind = defineKind({
  kind: "VirtualMachine",
  plural: "virtualmachines",
  singular: "virtualmachine",
  shortNames: ["vm"],
  scope: "Namespaced",
  description: "A virtual machine: its size, image, networks and disks, and whether it should run.",
  spec: Type.Object(
    {
      displayName: Type.Optional(
        Type.String({ maxLength: 255, description: "Human-readable name shown by the CloudStack API." }),
      ),
      zone: ObjectName({
        description: "The zone the VM runs in.",
        "x-kubernetes-validations": [immutable("zone")],
      }),
      serviceOffering: ObjectName({ description: "Name of the ServiceOffering that gives CPU and memory." }),
      template: ObjectName({
        description: "Name of the Template the root disk is created from.",
        "x-kubernetes-validations": [immutable("template")],
      }),
      runStrategy: Type.Optional(
        StringEnum(RUN_STRATEGIES, {
          default: "Always",
          description:
            "Always: keep it running. RerunOnFailure: restart it only after a failure, not after a guest shutdown. Manual: start and stop only through the start/stop calls. Halted: keep it stopped.",
        }),
      ),
      rootDisk: Type.Optional(
        Type.Object(
          {
            size: Type.Optional(
              Quantity({
                description: "Root disk size; defaults to the template's size.",
                min: "1Gi",
                max: "64Ti",
              }),
            ),
            diskOffering: Type.Optional(ObjectName({ description: "DiskOffering for the root disk." })),
          },
          { description: "The root disk, created from the template." },
        ),
      ),
      iso: Type.Optional(
        ObjectName({
          description:
            "An ISO Template (format iso) in the VM's CD-ROM drive (CloudStack's attachIso); swapped on a running VM as a disc is. A VM whose template is an ISO boots from the drive before its root disk.",
        }),
      ),
      nics: Type.Optional(
        NamedList(
          Type.Object(
            {
              name: LocalName({ description: "NIC name, unique within the VM, e.g. eth0." }),
              network: ObjectName({ description: "Name of the Network in the VM's namespace." }),
              ipAddress: Type.Optional(
                IPv4Address({
                  description: "A static address inside the network's CIDR; allocated when empty.",
                }),
              ),
              macAddress: Type.Optional(
                MACAddress({ description: "A fixed MAC address; generated when empty." }),
              ),
            },
            { description: "A network interface." },
          ),
          {
            description:
              "Network interfaces, in the order the guest sees them. The first is the default route.",
            maxItems: 16,
            "x-kubernetes-validations": [
              {
                rule: "self.all(n, !has(n.macAddress) || self.filter(m, has(m.macAddress) && m.macAddress == n.macAddress).size() == 1)",
                message: "two NICs cannot have the same MAC address",
              },
            ],
          },
        ),
      ),
      dataVolumes: Type.Optional(
        NamedList(
          Type.Object(
            {
              name: LocalName({ description: "Slot name, unique within the VM, e.g. data." }),
              volume: ObjectName({ description: "Name of the Volume in the VM's namespace." }),
            },
            { description: "A data volume attached to the VM." },
          ),
          {
            description: "Data volumes attached to the VM, in device order.",
            maxItems: 24,
            "x-kubernetes-validations": [
              {
                rule: "self.all(v, self.filter(w, w.volume == v.volume).size() == 1)",
                message: "a volume can be attached only once",
              },
            ],
          },
        ),
      ),
      userDataSecret: Type.Optional(
        ObjectName({
          description:
            "Name of a Secret in the VM's namespace whose key `userdata` is the user data for cloud-init (at most 32 KiB). Only the agent of the VM's host reads it, through the API component's virtualmachines/userdata; it is never copied into the VM.",
        }),
      ),
      sshKeys: Type.Optional(
        Type.Array(Type.String({ minLength: 1, maxLength: 16_384, description: "An OpenSSH public key." }), {
          description: "SSH public keys installed for the default user.",
          maxItems: 16,
          "x-kubernetes-list-type": "atomic",
        }),
      ),
      passwordSecret: Type.Optional(
        ObjectName({
          description:
            "Name of a Secret in the VM's namespace whose key `password` is the password of the guest's default user, set by cloud-init from the config drive. Read only by the agent of the VM's host (virtualmachines/userdata), at the next boot.",
        }),
      ),
      keyPairs: Type.Optional(
        Type.Array(ObjectName({ description: "Name of an SSHKeyPair in the VM's namespace." }), {
          description:
            "SSH key pairs whose public keys are installed for the default user, with sshKeys; a key pair that does not exist holds the start back with a condition naming it.",
          maxItems: 16,
          "x-kubernetes-list-type": "set",
        }),
      ),
      placement: Type.Optional(
        Type.Object(
          {
            hostTags: Labels("Extra host tags the VM needs, on top of its offering's."),
            antiAffinityGroup: Type.Optional(
              LocalName({ description: "VMs of the same namespace in the same group never share a host." }),
            ),
            affinityGroups: Type.Optional(
              Type.Array(
                ObjectName({
                  description: "Name of an AffinityGroup in the VM's namespace; its type says the rule.",
                }),
                {
                  description:
                    "The VM's CloudStack affinity groups. A group that does not exist keeps the VM unscheduled, with a condition that names it.",
                  maxItems: 16,
                  "x-kubernetes-list-type": "set",
                },
              ),
            ),
            host: Type.Optional(ObjectName({ description: "Pin the VM to this host (administrators)." })),
          },
          { description: "Hints for the scheduler." },
        ),
      ),
    },
    { description: "What the VM should be." },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      state: Type.Optional(StringEnum(VM_STATES, { description: "CloudStack state of the VM." })),
      host: Type.Optional(
        ObjectName({ description: "The host the VM is placed on, recorded by the orchestrator (compute)." }),
      ),
      domainUUID: Type.Optional(Type.String({ maxLength: 36, description: "UUID of the libvirt domain." })),
      evacuatedFrom: Type.Optional(
        ObjectName({
          description:
            "Written by the host agent: this host stopped the VM for maintenance and removed its domain, so the orchestration may place it elsewhere.",
        }),
      ),
      startClaim: Type.Optional(
        Type.Object(
          {
            host: ObjectName({ description: "The host whose agent is about to start the VM." }),
            at: Type.String({ maxLength: 64, description: "When (RFC 3339)." }),
          },
          {
            description:
              "Written by the host agent, on the version of the VM it has just read, before it starts an HA VM: a failover (written the same way by the fabric) and a start on the old host can never both succeed.",
          },
        ),
      ),
      failover: Type.Optional(
        Type.Object(
          {
            from: ObjectName({ description: "The host that was lost." }),
            lostAt: Type.String({
              maxLength: 64,
              description: "When its heartbeat Lease expired (RFC 3339).",
            }),
            releasedAt: Type.String({
              maxLength: 64,
              description:
                "When the fabric let the VM go to another host: past the Lease's expiry plus the fencing margin, by which time the lost host's watchdog has powered it off.",
            }),
            restartedOn: Type.Optional(ObjectName({ description: "The host it runs on again." })),
            restartedAt: Type.Optional(Type.String({ maxLength: 64, description: "When it ran again." })),
            downtimeSeconds: Type.Optional(
              Type.Integer({ minimum: 0, description: "From the loss of the host to running again." }),
            ),
          },
          {
            description:
              "Written by the fabric controller: the last restart of this HA VM after its host was lost.",
          },
        ),
      ),
      restartedAt: Type.Optional(
        Type.String({
          maxLength: 64,
          description:
            "The value of the stratus.io/restart-requested-at annotation the agent last acted on: a restart asked for with another value is pending.",
        }),
      ),
      iso: Type.Optional(
        ObjectName({
          description:
            "Written by the host agent: the ISO Template the VM's CD-ROM drive holds, as its domain shows.",
        }),
      ),
      nics: Type.Optional(
        NamedList(
          Type.Object(
            {
              name: LocalName({ description: "NIC name from the spec." }),
              network: ObjectName({ description: "The network." }),
              ipAddress: Type.Optional(IPv4Address({ description: "The allocated address." })),
              macAddress: Type.Optional(MACAddress({ description: "The MAC address." })),
            },
            { description: "A NIC as realised." },
          ),
          { description: "NICs with their addresses.", maxItems: 16 },
        ),
      ),
      conditions: Conditions(
        "Scheduled, VolumesReady, NetworksReady, Ready, and HostReady while the host is lost.",
      ),
    },
    { description: "The VM as observed." },
  ),
  printerColumns: [
    { name: "State", type: "string", jsonPath: ".status.state", description: "CloudStack state." },
    { name: "Host", type: "string", jsonPath: ".status.host", description: "Host the VM is placed on." },
    {
      name: "IP",
      type: "string",
      jsonPath: ".status.nics[0].ipAddress",
      description: "Address of the first NIC.",
    },
    {
      name: "Offering",
      type: "string",
      jsonPath: ".spec.serviceOffering",
      description: "Service offering.",
      priority: 1,
    },
    { name: "Run", type: "string", jsonPath: ".spec.runStrategy", description: "Run strategy.", priority: 1 },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
  // A host agent watches the VMs bound to it: placed there, or pinned there and not yet placed.
  selectableFields: [".status.host", ".spec.placement.host", ".spec.zone"],
});

// The Stratus API, group stratus.io/v1alpha1: every kind and its TypeScript type, from one source.
import { type KindDefinition, type ObjectOf, resourceOf } from "./definition.ts";
import { AffinityGroupKind } from "./kinds/affinity-group.ts";
import { AsyncJobKind } from "./kinds/async-job.ts";
import { DiskOfferingKind } from "./kinds/disk-offering.ts";
import { GuestVlanKind } from "./kinds/guest-vlan.ts";
import { HostKind } from "./kinds/host.ts";
import { IPAddressKind } from "./kinds/ip-address.ts";
import { NetworkKind } from "./kinds/network.ts";
import {
  EgressFirewallRuleKind,
  FirewallRuleKind,
  LoadBalancerRuleKind,
  PortForwardingRuleKind,
} from "./kinds/network-rules.ts";
import { PublicIPAddressKind, PublicIPClaimKind } from "./kinds/public-ip-address.ts";
import { ServiceOfferingKind } from "./kinds/service-offering.ts";
import { SnapshotPolicyKind } from "./kinds/snapshot-policy.ts";
import { SSHKeyPairKind } from "./kinds/ssh-key-pair.ts";
import { StoragePoolKind } from "./kinds/storage-pool.ts";
import { TemplateKind } from "./kinds/template.ts";
import { UserDataKind } from "./kinds/user-data.ts";
import { VirtualMachineKind } from "./kinds/virtual-machine.ts";
import { VirtualMachineMigrationKind } from "./kinds/virtual-machine-migration.ts";
import { VolumeKind } from "./kinds/volume.ts";
import { VolumeSnapshotKind } from "./kinds/volume-snapshot.ts";
import { ZoneKind } from "./kinds/zone.ts";

export { API_VERSION, GROUP, resourceOf, VERSION } from "./definition.ts";
export { AFFINITY_TYPES, type AffinityType } from "./kinds/affinity-group.ts";
export { guestVlanName } from "./kinds/guest-vlan.ts";
export { ipAddressName } from "./kinds/ip-address.ts";
export { MAX_BALANCED_VMS } from "./kinds/network-rules.ts";
export { publicIPClaimName, sourceNatName } from "./kinds/public-ip-address.ts";
export { SNAPSHOT_INTERVALS, type SnapshotInterval } from "./kinds/snapshot-policy.ts";
export { sshKeyPairObjectName } from "./kinds/ssh-key-pair.ts";
export {
  isSharedPoolType,
  localPoolName,
  POOL_TYPES,
  type PoolType,
  STORAGE_TYPES,
  type StorageType,
} from "./kinds/storage-pool.ts";
export { userDataObjectName } from "./kinds/user-data.ts";
export {
  awaitingFailoverRestart,
  DEPLOY_FAILED_ANNOTATION,
  isReleasedByFailover,
  RESTART_ANNOTATION,
} from "./kinds/virtual-machine.ts";
export {
  isFinalMigrationPhase,
  MIGRATION_FINALIZER,
  MIGRATION_PHASES,
  type MigrationPhase,
  TRANSFER_STATES,
  type TransferState,
} from "./kinds/virtual-machine-migration.ts";
export { needsRootVolume, rootVolumeName } from "./kinds/volume.ts";
export { REVERT_ANNOTATION, SNAPSHOT_POLICY_LABEL } from "./kinds/volume-snapshot.ts";

export const KINDS: readonly KindDefinition[] = [
  ZoneKind,
  HostKind,
  StoragePoolKind,
  ServiceOfferingKind,
  DiskOfferingKind,
  TemplateKind,
  VirtualMachineKind,
  VirtualMachineMigrationKind,
  VolumeKind,
  VolumeSnapshotKind,
  SnapshotPolicyKind,
  NetworkKind,
  IPAddressKind,
  GuestVlanKind,
  PublicIPAddressKind,
  PublicIPClaimKind,
  PortForwardingRuleKind,
  FirewallRuleKind,
  LoadBalancerRuleKind,
  EgressFirewallRuleKind,
  AffinityGroupKind,
  AsyncJobKind,
  SSHKeyPairKind,
  UserDataKind,
];

export {
  AffinityGroupKind,
  AsyncJobKind,
  DiskOfferingKind,
  EgressFirewallRuleKind,
  FirewallRuleKind,
  GuestVlanKind,
  HostKind,
  IPAddressKind,
  LoadBalancerRuleKind,
  NetworkKind,
  PortForwardingRuleKind,
  PublicIPAddressKind,
  PublicIPClaimKind,
  ServiceOfferingKind,
  SnapshotPolicyKind,
  SSHKeyPairKind,
  StoragePoolKind,
  TemplateKind,
  UserDataKind,
  VirtualMachineKind,
  VolumeKind,
  VolumeSnapshotKind,
  ZoneKind,
};

export type Zone = ObjectOf<typeof ZoneKind>;
export type Host = ObjectOf<typeof HostKind>;
export type StoragePool = ObjectOf<typeof StoragePoolKind>;
export type ServiceOffering = ObjectOf<typeof ServiceOfferingKind>;
export type DiskOffering = ObjectOf<typeof DiskOfferingKind>;
export type Template = ObjectOf<typeof TemplateKind>;
export type VirtualMachine = ObjectOf<typeof VirtualMachineKind>;
export type VirtualMachineMigration = ObjectOf<typeof VirtualMachineMigrationKind>;
export type Volume = ObjectOf<typeof VolumeKind>;
export type VolumeSnapshot = ObjectOf<typeof VolumeSnapshotKind>;
export type SnapshotPolicy = ObjectOf<typeof SnapshotPolicyKind>;
export type Network = ObjectOf<typeof NetworkKind>;
export type IPAddress = ObjectOf<typeof IPAddressKind>;
export type GuestVlan = ObjectOf<typeof GuestVlanKind>;
export type PublicIPAddress = ObjectOf<typeof PublicIPAddressKind>;
export type PublicIPClaim = ObjectOf<typeof PublicIPClaimKind>;
export type PortForwardingRule = ObjectOf<typeof PortForwardingRuleKind>;
export type FirewallRule = ObjectOf<typeof FirewallRuleKind>;
export type LoadBalancerRule = ObjectOf<typeof LoadBalancerRuleKind>;
export type EgressFirewallRule = ObjectOf<typeof EgressFirewallRuleKind>;
export type AsyncJob = ObjectOf<typeof AsyncJobKind>;
export type AffinityGroup = ObjectOf<typeof AffinityGroupKind>;
export type SSHKeyPair = ObjectOf<typeof SSHKeyPairKind>;
export type UserData = ObjectOf<typeof UserDataKind>;

/** Where each kind lives in the API, for the runtime's client and informers. */
export const Resources = {
  zones: resourceOf(ZoneKind),
  hosts: resourceOf(HostKind),
  storagePools: resourceOf(StoragePoolKind),
  serviceOfferings: resourceOf(ServiceOfferingKind),
  diskOfferings: resourceOf(DiskOfferingKind),
  templates: resourceOf(TemplateKind),
  virtualMachines: resourceOf(VirtualMachineKind),
  virtualMachineMigrations: resourceOf(VirtualMachineMigrationKind),
  volumes: resourceOf(VolumeKind),
  volumeSnapshots: resourceOf(VolumeSnapshotKind),
  snapshotPolicies: resourceOf(SnapshotPolicyKind),
  networks: resourceOf(NetworkKind),
  ipAddresses: resourceOf(IPAddressKind),
  guestVlans: resourceOf(GuestVlanKind),
  publicIPAddresses: resourceOf(PublicIPAddressKind),
  publicIPClaims: resourceOf(PublicIPClaimKind),
  portForwardingRules: resourceOf(PortForwardingRuleKind),
  firewallRules: resourceOf(FirewallRuleKind),
  loadBalancerRules: resourceOf(LoadBalancerRuleKind),
  egressFirewallRules: resourceOf(EgressFirewallRuleKind),
  asyncJobs: resourceOf(AsyncJobKind),
  affinityGroups: resourceOf(AffinityGroupKind),
  sshKeyPairs: resourceOf(SSHKeyPairKind),
  userData: resourceOf(UserDataKind),
} as const;

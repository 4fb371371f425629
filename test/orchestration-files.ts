// Which integration test files run one at a time (vitest.config.ts), and the rule that decides it
// (orchestration-files.test.ts holds every file to it).

/**
 * Files that run Stratus operators: an operator reconciles every namespace and watches every
 * host's heartbeat, so two at once would fight over the same objects. They run one at a time,
 * after the rest, on a control plane of their own.
 */
export const ORCHESTRATION = [
  "test/integration/operator.test.ts",
  "test/integration/host-agent.test.ts",
  "test/integration/orchestration.test.ts",
  "test/integration/orchestration-writes.test.ts",
  "test/integration/cloudstack-api.test.ts",
  // the API component's job controller acts on every namespace's AsyncJobs.
  "test/integration/keypairs-api.test.ts",
  "test/integration/user-data-api.test.ts",
  // three API components, whose job controllers act on every namespace's AsyncJobs.
  "test/integration/cloudstack-auth.test.ts",
  // the API component's job controller acts on every namespace's AsyncJobs.
  "test/integration/storage-api.test.ts",
  "test/integration/snapshot-api.test.ts",
  "test/integration/host-api.test.ts",
  // the operator, the API component and a host agent: URL templates registered through the API.
  "test/integration/register-template.test.ts",
  "test/integration/volume-migration-api.test.ts",
  "test/integration/subresources.test.ts",
  "test/integration/gitops.test.ts",
  "test/integration/least-privilege.test.ts",
  // two network controllers and a host agent against tenants' networks.
  "test/integration/guest-networks.test.ts",
  // the API component's job controller acts on every namespace's AsyncJobs.
  "test/integration/tenancy.test.ts",
  // an operator, two simulated host agents and the API component holding VMs to accounts' limits.
  "test/integration/resource-limits.test.ts",
  // the API component's job controller acts on every namespace's AsyncJobs (deleteAccount's).
  "test/integration/accounts-api.test.ts",
  "test/integration/qemu-e2e.test.ts",
  // an operator, the API component and a QEMU agent running isolated networks' routers.
  "test/integration/guest-routers.test.ts",
  // a real cloud-init guest logged into with ssh: the operator, the API component and an agent.
  "test/integration/guest-login.test.ts",
  // storage binding snapshots and running snapshot policies (restarted with SIGKILL).
  "test/integration/volume-snapshots.test.ts",
  // HA failover: two agents frozen, fenced and restarted under an operator of its own.
  "test/integration/failover.test.ts",
  // two host agents on the machine's libvirt daemon moving real guests' disks.
  "test/integration/storage-e2e.test.ts",
  // a second libvirt daemon of its own and a host agent on each.
  "test/integration/two-hypervisors.test.ts",
  // HA failover between the two real hypervisors of two-hypervisors.ts.
  "test/integration/ha-qemu.test.ts",
  // live migration between the two real hypervisors of two-hypervisors.ts.
  "test/integration/live-migration.test.ts",
  // the API component's job controller acts on every namespace's AsyncJobs.
  "test/integration/vm-migration-api.test.ts",
  // an operator, two simulated host agents and the API component placing affinity groups.
  "test/integration/affinity-api.test.ts",
  // the operator against volumes and pools whose agents the test plays.
  "test/integration/storage-pools.test.ts",
  // URL templates downloaded once per zone: the operator and two host agents.
  "test/integration/zone-templates.test.ts",
  // two control planes and their agents on the machine's libvirt daemon.
  "test/integration/shared-libvirt.test.ts",
  // ISOs booted and swapped in real QEMU guests, with an operator and the API component of its own.
  "test/integration/iso.test.ts",
  // `stratus up` runs a whole cloud (on a control plane of its own) and may start libvirtd.
  "test/integration/cli.test.ts",
  // the benchmark's smoke mode: an operator, host agents and the API component of its own.
  "test/integration/bench.test.ts",
  // an operator, a simulated host agent and the API component (startCloudStackCloud).
  "test/integration/cloudstack-behaviour.test.ts",
  // the operator and a host agent keeping snapshots in MinIO.
  "test/integration/snapshot-store.test.ts",
];

/** A file whose controllers watch only its own namespace says so with this, and may run alongside others. */
export const NAMESPACED_ACTOR = "InformerFactory(client, { namespace })";

/** What in a test file starts something that acts on every namespace or every host. */
export const CLUSTER_WIDE_ACTORS =
  /\b(startOperator|startCloudStackCloud|startApiServer|startHostAgent|SimulatedAgents|startZoneFabric|jobController)\b/;

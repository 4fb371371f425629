// Pure: a Host as CloudStack's listHosts shows it (HostJoinDaoImpl.newHostResponse): state from
// the heartbeat (Up, Disconnected while the Lease is expired, Connecting before the first one),
// resource state from the fabric, capacity and allocation from status; type Routing, as every
// hypervisor host is in CloudStack.
import type { Host } from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import { compact, formatDate, type Json } from "./envelope.ts";
import type { Catalog } from "./views.ts";

/** CloudStack's host Status. */
export function hostState(host: Host): "Up" | "Disconnected" | "Connecting" {
  const ready = host.status?.conditions?.find((c) => c.type === "Ready");
  if (ready?.status === "True") return "Up";
  return ready?.reason === "HeartbeatExpired" ? "Disconnected" : "Connecting";
}

/** CloudStack's hypervisor name: KVM for QEMU/KVM hosts, Simulator for libvirt's test driver. */
export const hypervisorName = (host: Host): "KVM" | "Simulator" =>
  host.status?.hypervisor?.type === "Simulator" ? "Simulator" : "KVM";

const bytes = (quantity: string | undefined) => (quantity ? Number(parseQuantity(quantity)) : undefined);

export function hostView(host: Host, catalog: Pick<Catalog, "zone">): Json {
  const ready = host.status?.conditions?.find((c) => c.type === "Ready");
  const cpus = host.status?.capacity?.cpu;
  const allocatedCpu = host.status?.allocated?.cpu ?? 0;
  const state = hostState(host);
  return compact({
    id: host.metadata.uid as string,
    name: host.metadata.name as string,
    type: "Routing",
    state,
    resourcestate: host.status?.resourceState ?? "Enabled",
    hypervisor: hypervisorName(host),
    hypervisorversion: host.status?.hypervisor?.version,
    version: host.status?.agentVersion,
    zoneid: catalog.zone(host.spec.zone)?.metadata.uid,
    zonename: host.spec.zone,
    cpunumber: cpus,
    cpuallocated: cpus ? `${((allocatedCpu / cpus) * 100).toFixed(2)}%` : undefined,
    cpuallocatedvalue: allocatedCpu,
    memorytotal: bytes(host.status?.capacity?.memory),
    memoryallocated: bytes(host.status?.allocated?.memory) ?? 0,
    hosttags: host.spec.tags?.length ? host.spec.tags.join(",") : undefined,
    hahost: false,
    disconnected: state === "Up" ? undefined : formatDate(ready?.lastTransitionTime),
    created: formatDate(host.metadata.creationTimestamp),
  });
}

// The heartbeat Lease of a host: its agent renews it, the fabric monitor reads it. Defined once
// here so the writer and the reader can never disagree on the name or the label.

/** The label every host heartbeat Lease carries, with the host's name as its value. */
export const HOST_LEASE_LABEL = "stratus.io/host";

/** The name of a host's heartbeat Lease (in the lease namespace, stratus-system by default). */
export function hostLeaseName(host: string): string {
  return `host-${host}`;
}

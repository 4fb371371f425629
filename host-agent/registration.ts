// A host's presence in the cluster: its identity (cluster and host), its Host object with the
// facts the hypervisor reports (written once at registration), and its heartbeat Lease, renewed
// without ever writing Host status. Each beat also looks whether the libvirt daemon still answers.
import type { Logger } from "pino";
import { HOST_LEASE_LABEL, hostLeaseName } from "../crds/host-lease.ts";
import { type Host, Resources } from "../crds/index.ts";
import { formatQuantity } from "../crds/quantity.ts";
import { isAlreadyExists, isConflict, type KubeClient, NAMESPACE } from "../runtime/client.ts";
import { LEASE, type Lease } from "../runtime/leader-election.ts";
import { applyStatus, unlessGone } from "../runtime/objects.ts";
import { kubeMicroTime, sleep } from "../runtime/time.ts";
import { AGENT_FIELD_MANAGER } from "./agent-writes.ts";
import type { HostFacts } from "./hypervisor.ts";

export const AGENT_VERSION = "0.2.0";

/**
 * The cluster's identity: the UID of its kube-system namespace, as other cluster-aware tools use.
 * A re-installed control plane has a new one, so its agent never takes the old one's domains.
 */
export async function clusterIdentity(client: KubeClient): Promise<string> {
  const namespace = await client.get(NAMESPACE, "kube-system");
  return namespace.metadata.uid as string;
}

/** Creates the Host (the zone is the administrator's once it exists) and reports its facts. */
export async function registerHost(
  client: KubeClient,
  options: {
    hostName: string;
    zone: string;
    facts: HostFacts;
    consoleEndpoint?: { endpoint: string; certificate: string };
    /** Where other hosts' agents send live migrations (Host status.migrationUri, migrationAddress). */
    migration?: { uri?: string; address?: string };
    log: Logger;
  },
): Promise<void> {
  const { hostName, facts } = options;
  try {
    await client.create(Resources.hosts, { metadata: { name: hostName }, spec: { zone: options.zone } });
    options.log.info({ zone: options.zone }, "registered the host");
  } catch (error) {
    if (!isAlreadyExists(error)) throw error;
  }
  const host = await client.get<Host>(Resources.hosts, hostName);
  await applyStatus(
    client,
    Resources.hosts,
    host,
    {
      hypervisor: {
        type: facts.type,
        version: facts.version,
        libvirtVersion: facts.libvirtVersion,
        uri: facts.uri,
      },
      agentVersion: AGENT_VERSION,
      ...(options.consoleEndpoint
        ? {
            consoleEndpoint: options.consoleEndpoint.endpoint,
            consoleCertificate: options.consoleEndpoint.certificate,
          }
        : {}),
      ...(options.migration?.uri ? { migrationUri: options.migration.uri } : {}),
      ...(options.migration?.address ? { migrationAddress: options.migration.address } : {}),
      capacity: {
        cpu: facts.cpus,
        memory: formatQuantity(BigInt(facts.memoryBytes)),
        storage: formatQuantity(facts.storageBytes),
      },
    },
    AGENT_FIELD_MANAGER,
  );
}

export interface HeartbeatOptions {
  client: KubeClient;
  hostName: string;
  namespace: string;
  intervalMs: number;
  leaseDurationSeconds: number;
  log: Logger;
  /** Runs after each renewal (the agent checks its libvirt daemon there). */
  onBeat?: () => Promise<void>;
  /** Runs after a renewal succeeded, with the renewTime it wrote (the fence deadline counts from it). */
  onRenewed?: (renewedAtMs: number) => Promise<void>;
}

/** Renews the host's Lease until `signal` aborts; the fabric monitor reads it. */
export async function runHeartbeat(options: HeartbeatOptions, signal: AbortSignal): Promise<void> {
  const { client, hostName, namespace, leaseDurationSeconds } = options;
  const name = hostLeaseName(hostName);
  let lease: Lease | undefined;
  while (!signal.aborted) {
    const now = kubeMicroTime();
    try {
      lease ??= await unlessGone(client.get<Lease>(LEASE, name, namespace));
      lease = lease
        ? await client.replace<Lease>(LEASE, {
            ...lease,
            spec: { ...lease.spec, holderIdentity: hostName, leaseDurationSeconds, renewTime: now },
          })
        : await client.create<Lease>(LEASE, {
            metadata: { name, namespace, labels: { [HOST_LEASE_LABEL]: hostName } },
            spec: { holderIdentity: hostName, leaseDurationSeconds, acquireTime: now, renewTime: now },
          });
      await options.onRenewed?.(Date.parse(now));
    } catch (error) {
      lease = undefined; // read it again next time (someone else changed it, or it is gone)
      if (!isConflict(error) && !isAlreadyExists(error))
        options.log.warn({ err: String(error) }, "heartbeat failed");
    }
    await options.onBeat?.();
    await sleep(options.intervalMs, signal);
  }
}

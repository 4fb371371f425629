// Public addresses of a zone, allocated by creating their PublicIPClaim, whose name is the address
// (claims.ts: etcd refuses a second create, so two allocators never hand out the same one), and
// released by deleting the claim once its PublicIPAddress is gone.
import type { Logger } from "pino";
import { ipToNumber } from "../../crds/addressing.ts";
import {
  type PublicIPAddress,
  type PublicIPClaim,
  publicIPClaimName,
  Resources,
  type Zone,
} from "../../crds/index.ts";
import { isConflict, isNotFound, type KubeClient, objectKey } from "../../runtime/client.ts";
import { Controller } from "../../runtime/controller.ts";
import type { Informer } from "../../runtime/informer.ts";
import type { RuntimeMetrics } from "../../runtime/metrics.ts";
import { claimFirstFree } from "./claims.ts";

export type PublicNetwork = NonNullable<Zone["spec"]["publicNetwork"]>;

const numberToIp = (n: number) => [24, 16, 8, 0].map((shift) => (n >>> shift) & 255).join(".");

/** The zone's public addresses in order, the gateway and the network's own ends left out. */
export function* publicCandidates(publicNetwork: PublicNetwork): Generator<string> {
  const [base, bits] = publicNetwork.cidr.split("/") as [string, string];
  const first = ipToNumber(base);
  const last = first + 2 ** (32 - Number(bits)) - 1;
  const gateway = ipToNumber(publicNetwork.gateway);
  for (const range of publicNetwork.ranges) {
    for (let n = ipToNumber(range.start); n <= ipToNumber(range.end); n++)
      if (n > first && n < last && n !== gateway) yield numberToIp(n);
  }
}

export class PublicAddressAllocator {
  /** PublicIPClaim name -> holder UID and address, for claims this process made that its cache may not show yet. */
  private readonly claimed = new Map<string, { uid: string; address: string }>();
  private readonly client: KubeClient;
  private readonly claims: Informer<PublicIPClaim>;

  /** `claims` must be indexed by `holder` (`<namespace>/<name>`). */
  constructor(client: KubeClient, claims: Informer<PublicIPClaim>) {
    this.client = client;
    this.claims = claims;
  }

  /** The address `pip` holds, claiming the first free one; undefined when the zone has none left. */
  async allocate(
    pip: PublicIPAddress,
    zone: string,
    publicNetwork: PublicNetwork,
  ): Promise<string | undefined> {
    const uid = pip.metadata.uid as string;
    // A claim made for it before a restart, or by this process before the cache shows it.
    const held = this.claims
      .byIndex("holder", objectKey(pip))
      .find((c) => c.spec.holder.uid === uid && c.spec.zone === zone);
    if (held) return held.spec.address;
    const mine = [...this.claimed.values()].find((claim) => claim.uid === uid);
    if (mine) return mine.address;
    return claimFirstFree({
      candidates: publicCandidates(publicNetwork),
      key: (candidate) => publicIPClaimName(zone, candidate),
      taken: (candidate) => this.claims.get(publicIPClaimName(zone, candidate)) !== undefined,
      claimed: this.claimed,
      mine: (candidate) => ({ uid, address: candidate }),
      others: (candidate) => ({ uid: "", address: candidate }),
      create: (candidate) =>
        this.client.create<PublicIPClaim>(Resources.publicIPClaims, {
          apiVersion: "stratus.io/v1alpha1",
          kind: "PublicIPClaim",
          metadata: { name: publicIPClaimName(zone, candidate) },
          spec: {
            zone,
            address: candidate,
            holder: { namespace: pip.metadata.namespace as string, name: pip.metadata.name as string, uid },
          },
        }),
    });
  }
}

/**
 * Releases each PublicIPClaim whose PublicIPAddress is gone (deleted, or its network deleted with
 * it). The cache may lag a new holder, so only a fresh read decides.
 */
export function claimReleaser(
  client: KubeClient,
  informers: { claims: Informer<PublicIPClaim>; publicAddresses: Informer<PublicIPAddress> },
  logger: Logger,
  metrics: RuntimeMetrics,
): Controller {
  const { claims, publicAddresses } = informers;
  return new Controller({
    name: "public-ip-claims",
    logger,
    metrics,
    async reconcile(name, log) {
      const claim = claims.get(name);
      if (!claim) return;
      const { namespace, name: holderName, uid } = claim.spec.holder;
      if (publicAddresses.get(`${namespace}/${holderName}`)?.metadata.uid === uid) return;
      const live = await client
        .get<PublicIPAddress>(Resources.publicIPAddresses, holderName, namespace)
        .catch((error: unknown) => {
          if (isNotFound(error)) return undefined;
          throw error;
        });
      if (live?.metadata.uid === uid) return;
      await client
        .delete(Resources.publicIPClaims, name, undefined, { uid: claim.metadata.uid as string })
        .catch((error: unknown) => {
          if (!isNotFound(error) && !isConflict(error)) throw error;
        });
      log.info(
        { address: claim.spec.address, holder: `${namespace}/${holderName}` },
        "released a public address",
      );
    },
  })
    .watch(claims, (c) => [c.metadata.name as string])
    .watch(publicAddresses, (p) =>
      claims.byIndex("holder", objectKey(p)).map((c) => c.metadata.name as string),
    );
}

// VLAN allocation: a network holds a VLAN of its zone by creating the GuestVlan named
// <zone>-<vlan> (claims.ts, as IPAM holds addresses), so two networks never share one, even with
// two controllers or a restart between the create and the status write: the GuestVlan survives and
// names the network's UID, so the next reconcile finds it.
import type { Logger } from "pino";
import { type GuestVlan, guestVlanName, type Network, Resources } from "../../crds/index.ts";
import { isAlreadyExists, isConflict, isNotFound, type KubeClient, objectKey } from "../../runtime/client.ts";
import type { Informer } from "../../runtime/informer.ts";
import { claimFirstFree } from "./claims.ts";

/** The informer indexes of GuestVlans the allocator reads. */
export const VLAN_INDEXERS = {
  network: (v: GuestVlan) => [`${v.spec.network.namespace}/${v.spec.network.name}`],
  zone: (v: GuestVlan) => [v.spec.zone],
};

export type VlanOutcome = { vlan: number } | { problem: { reason: string; message: string } };

export class VlanAllocator {
  private readonly client: KubeClient;
  private readonly vlans: Informer<GuestVlan>;
  /** GuestVlan name -> UID of the network this process created it for ("" when another holds it). */
  private readonly claimed = new Map<string, string>();

  /** `vlans` must carry VLAN_INDEXERS. */
  constructor(client: KubeClient, vlans: Informer<GuestVlan>) {
    this.client = client;
    this.vlans = vlans;
  }

  /** The VLANs the network holds: those the cache shows, and those this process just created. */
  held(network: Network): number[] {
    const uid = network.metadata.uid as string;
    const mine = new Set<number>();
    for (const v of this.vlans.byIndex("network", objectKey(network))) {
      this.claimed.delete(v.metadata.name as string); // the cache shows it: no need to remember
      if (v.spec.network.uid === uid && v.spec.zone === network.spec.zone) mine.add(v.spec.vlan);
    }
    for (const [name, owner] of this.claimed) {
      const vlan = Number(name.slice(network.spec.zone.length + 1));
      if (owner === uid && name === guestVlanName(network.spec.zone, vlan)) mine.add(vlan);
    }
    return [...mine].sort((a, b) => a - b);
  }

  /**
   * Makes the network hold exactly one VLAN: the one an administrator named, else the one it holds
   * (the lowest, should two allocators have raced), else the first free one of `range`. Any other
   * it holds is released.
   */
  async ensure(network: Network, range: { first: number; last: number }, log: Logger): Promise<VlanOutcome> {
    const zone = network.spec.zone;
    const held = this.held(network);
    let vlan: number | undefined;
    if (network.spec.vlan !== undefined) {
      vlan = network.spec.vlan;
      if (!held.includes(vlan) && !(await this.claimExactly(network, vlan)))
        return {
          problem: {
            reason: "VlanInUse",
            message: `VLAN ${vlan} is already held by another network of zone ${zone}.`,
          },
        };
    } else if (held.length > 0) {
      // The lowest, not the one status records: two controllers that raced then agree on it.
      vlan = held[0] as number;
    } else {
      const taken = new Set(this.vlans.byIndex("zone", zone).map((v) => v.spec.vlan));
      vlan = await claimFirstFree({
        candidates: numbers(range.first, range.last),
        key: (candidate) => guestVlanName(zone, candidate),
        taken: (candidate) => taken.has(candidate),
        claimed: this.claimed,
        mine: () => network.metadata.uid as string,
        others: () => "",
        create: (candidate) => this.create(network, candidate),
      });
      if (vlan === undefined)
        return {
          problem: {
            reason: "VlansExhausted",
            message: `Every VLAN of ${range.first}-${range.last} is in use in zone ${zone}.`,
          },
        };
      log.info({ vlan }, "allocated a VLAN");
    }
    // Only what it held when it chose: a VLAN the cache showed since may be the one another
    // controller chose for it (the lowest), and deleting that would leave its status naming none.
    const keep = vlan;
    await this.release(
      objectKey(network),
      (v) =>
        v.spec.network.uid === network.metadata.uid && v.spec.vlan !== keep && held.includes(v.spec.vlan),
      log,
    );
    return { vlan };
  }

  /** Releases the network's VLANs: all of them when `uid` is undefined, else those of other UIDs. */
  async releaseAll(networkKey: string, log: Logger, uid?: string): Promise<void> {
    await this.release(networkKey, (v) => uid === undefined || v.spec.network.uid !== uid, log);
  }

  private async release(networkKey: string, which: (v: GuestVlan) => boolean, log: Logger): Promise<void> {
    for (const v of this.vlans.byIndex("network", networkKey).filter(which)) {
      await this.client
        .delete(Resources.guestVlans, v.metadata.name as string, undefined, { uid: v.metadata.uid as string })
        .catch((error: unknown) => {
          if (!isNotFound(error) && !isConflict(error)) throw error;
        });
      log.info({ vlan: v.spec.vlan }, "released a VLAN");
    }
  }

  /** Claims the VLAN an administrator named; false when another network holds it. */
  private async claimExactly(network: Network, vlan: number): Promise<boolean> {
    try {
      await this.create(network, vlan);
      this.claimed.set(guestVlanName(network.spec.zone, vlan), network.metadata.uid as string);
      return true;
    } catch (error) {
      if (!isAlreadyExists(error)) throw error;
      const holder = await this.client
        .get<GuestVlan>(Resources.guestVlans, guestVlanName(network.spec.zone, vlan))
        .catch(() => undefined);
      return holder?.spec.network.uid === network.metadata.uid;
    }
  }

  private create(network: Network, vlan: number): Promise<unknown> {
    const zone = network.spec.zone;
    return this.client.create<GuestVlan>(Resources.guestVlans, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "GuestVlan",
      metadata: { name: guestVlanName(zone, vlan) },
      spec: {
        zone,
        vlan,
        network: {
          namespace: network.metadata.namespace as string,
          name: network.metadata.name as string,
          uid: network.metadata.uid as string,
        },
      },
    });
  }
}

function* numbers(first: number, last: number): Generator<number> {
  for (let n = first; n <= last; n++) yield n;
}

// Pure: what an isolated network's router should hold, from the network's public addresses and the
// rules on them, and the verdict on each rule. Conflicts are settled the way CloudStack's firewall
// manager settles them, oldest rule first: a port range used twice on one address and protocol, or
// a port forward on an address with static NAT, is refused with CloudStack's message and never
// reaches the router. A rule whose VM has no address on the network waits for one.
import type { FirewallRule, Network, PortForwardingRule, PublicIPAddress } from "../../crds/index.ts";
import type { ConditionInput } from "../../runtime/conditions.ts";

/** At most this many port forwards, and this many firewall rules, per network (as the CRD's status). */
export const MAX_RULES = 256;

export type RouterStatus = NonNullable<NonNullable<Network["status"]>["router"]>;
export type RouterConfig = Omit<RouterStatus, "host">;

export interface RouterInputs {
  /** The network's source-NAT address object (allocated or not). */
  sourceNat: PublicIPAddress | undefined;
  /** Every PublicIPAddress of the network, the source-NAT one among them. */
  publicAddresses: readonly PublicIPAddress[];
  portForwards: readonly PortForwardingRule[];
  firewall: readonly FirewallRule[];
  /** The address of a VM of the account on this network, if it has one. */
  guestAddress(vm: string): string | undefined;
}

export interface RouterPlan {
  /** Undefined until the source-NAT address is allocated: a router without one serves no purpose. */
  config: RouterConfig | undefined;
  /** The Accepted condition of each rule, by object name ("pfr/<name>" or "fwr/<name>"). */
  verdicts: Map<string, ConditionInput>;
}

const byAge = <T extends { metadata: { creationTimestamp?: string; name?: string } }>(a: T, b: T) =>
  (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? "") ||
  (a.metadata.name ?? "").localeCompare(b.metadata.name ?? "");

const overlaps = (a: { start: number; end: number }, b: { start: number; end: number }) =>
  a.start <= b.end && b.start <= a.end;

const range = (r: { start: number; end: number }) =>
  r.start === r.end ? `${r.start}` : `${r.start}-${r.end}`;

const refused = (reason: string, message: string): ConditionInput => ({
  type: "Accepted",
  status: "False",
  reason,
  message,
});

const tooMany = (kind: string) =>
  refused("RuleLimitExceeded", `The network has ${MAX_RULES} ${kind} rules, the most a router holds.`);

export function planRouter(inputs: RouterInputs): RouterPlan {
  const verdicts = new Map<string, ConditionInput>();
  const addressOf = new Map<string, string>();
  for (const pip of inputs.publicAddresses)
    if (pip.status?.address && !pip.metadata.deletionTimestamp)
      addressOf.set(pip.metadata.name as string, pip.status.address);
  const sourceNatAddress = inputs.sourceNat?.status?.address;

  const staticNat: RouterConfig["staticNat"] = [];
  const staticNatted = new Set<string>();
  for (const pip of inputs.publicAddresses) {
    const vm = pip.spec.staticNat?.virtualMachine;
    const publicAddress = addressOf.get(pip.metadata.name as string);
    if (!vm || !publicAddress || pip === inputs.sourceNat) continue;
    const guestAddress = inputs.guestAddress(vm);
    if (!guestAddress) continue;
    staticNat.push({ publicAddress, guestAddress });
    staticNatted.add(pip.metadata.name as string);
  }

  const unknownAddress = (name: string) =>
    refused(
      "PublicIPAddressNotFound",
      `PublicIPAddress ${name} is not an allocated public address of this network.`,
    );

  const portForwards: RouterConfig["portForwards"] = [];
  const acceptedForwards: PortForwardingRule[] = [];
  for (const rule of [...inputs.portForwards].sort(byAge)) {
    const key = `pfr/${rule.metadata.name}`;
    const publicAddress = addressOf.get(rule.spec.publicIPAddress);
    if (!publicAddress) {
      verdicts.set(key, unknownAddress(rule.spec.publicIPAddress));
      continue;
    }
    if (
      staticNatted.has(rule.spec.publicIPAddress) ||
      inputs.publicAddresses.some((p) => p.metadata.name === rule.spec.publicIPAddress && p.spec.staticNat)
    ) {
      verdicts.set(
        key,
        refused(
          "StaticNatEnabled",
          `Can't create port forwarding rule: ip address ${publicAddress} has static nat enabled.`,
        ),
      );
      continue;
    }
    if (acceptedForwards.length >= MAX_RULES) {
      verdicts.set(key, tooMany("port-forwarding"));
      continue;
    }
    const conflict = acceptedForwards.find(
      (other) =>
        other.spec.publicIPAddress === rule.spec.publicIPAddress &&
        other.spec.protocol === rule.spec.protocol &&
        overlaps(other.spec.publicPort, rule.spec.publicPort),
    );
    if (conflict) {
      verdicts.set(
        key,
        refused(
          "NetworkRuleConflict",
          `The range specified, ${range(rule.spec.publicPort)}, conflicts with rule ${conflict.metadata.name} which has ${range(conflict.spec.publicPort)}`,
        ),
      );
      continue;
    }
    const guestAddress = inputs.guestAddress(rule.spec.virtualMachine);
    if (!guestAddress) {
      verdicts.set(
        key,
        refused(
          "VirtualMachineNotOnNetwork",
          `VM ${rule.spec.virtualMachine} has no address on the network of ${rule.spec.publicIPAddress} (yet).`,
        ),
      );
      continue;
    }
    acceptedForwards.push(rule);
    portForwards.push({
      publicAddress,
      protocol: rule.spec.protocol,
      publicPort: rule.spec.publicPort,
      guestAddress,
      privatePort: rule.spec.privatePort,
    });
    verdicts.set(key, {
      type: "Accepted",
      status: "True",
      reason: "Active",
      message: `${publicAddress}:${range(rule.spec.publicPort)} goes to ${guestAddress}.`,
    });
  }

  const firewall: RouterConfig["firewall"] = [];
  for (const rule of [...inputs.firewall].sort(byAge)) {
    const key = `fwr/${rule.metadata.name}`;
    const publicAddress = addressOf.get(rule.spec.publicIPAddress);
    if (!publicAddress) {
      verdicts.set(key, unknownAddress(rule.spec.publicIPAddress));
      continue;
    }
    if (firewall.length >= MAX_RULES) {
      verdicts.set(key, tooMany("firewall"));
      continue;
    }
    firewall.push({
      publicAddress,
      protocol: rule.spec.protocol,
      ...(rule.spec.ports ? { ports: rule.spec.ports } : {}),
      cidrs: [...rule.spec.cidrs],
    });
    verdicts.set(key, {
      type: "Accepted",
      status: "True",
      reason: "Active",
      message: `Open on ${publicAddress}.`,
    });
  }

  if (!sourceNatAddress) return { config: undefined, verdicts };
  const others = [...addressOf.values()].filter((a) => a !== sourceNatAddress).sort();
  return {
    config: {
      sourceNatAddress,
      publicAddresses: [sourceNatAddress, ...others],
      staticNat,
      portForwards,
      firewall,
    },
    verdicts,
  };
}

// Pure: what an isolated network's router should hold, from the network's public addresses and the
// rules on them, and the verdict on each rule. Conflicts are settled the way CloudStack's firewall
// manager settles them, oldest rule first: a port range used twice on one address and protocol, or
// a port forward on an address with static NAT, is refused with CloudStack's message and never
// reaches the router. A rule whose VM has no address on the network waits for one.
import type {
  EgressFirewallRule,
  FirewallRule,
  LoadBalancerRule,
  Network,
  PortForwardingRule,
  PublicIPAddress,
} from "../../crds/index.ts";
import type { ConditionInput } from "../../runtime/conditions.ts";

/** At most this many port forwards, and this many firewall rules, per network (as the CRD's status). */
export const MAX_RULES = 256;
/** At most this many load balancers per network (as the CRD's status). */
export const MAX_LOAD_BALANCERS = 64;

export type RouterStatus = NonNullable<NonNullable<Network["status"]>["router"]>;
export type RouterConfig = Omit<RouterStatus, "host">;

export interface RouterInputs {
  /** The network's source-NAT address object (allocated or not). */
  sourceNat: PublicIPAddress | undefined;
  /** Every PublicIPAddress of the network, the source-NAT one among them. */
  publicAddresses: readonly PublicIPAddress[];
  portForwards: readonly PortForwardingRule[];
  loadBalancers: readonly LoadBalancerRule[];
  firewall: readonly FirewallRule[];
  /** The network's egress rules, and whether guests go out unless one blocks it. */
  egress: readonly EgressFirewallRule[];
  egressDefaultAllow: boolean;
  /** The address of a VM of the account on this network, if it has one. */
  guestAddress(vm: string): string | undefined;
}

export interface RouterPlan {
  /** Undefined until the source-NAT address is allocated: a router without one serves no purpose. */
  config: RouterConfig | undefined;
  /** The Accepted condition of each rule, by kind and name ("pfr/", "lbr/", "fwr/", "efr/<name>"). */
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

const active = (message: string): ConditionInput => ({
  type: "Accepted",
  status: "True",
  reason: "Active",
  message,
});

const notOnNetwork = (vm: string, publicAddress: string) =>
  refused("VirtualMachineNotOnNetwork", `VM ${vm} has no address on the network of ${publicAddress} (yet).`);

/** The public ports a port forward or a load balancer takes on its address. */
interface PortUse {
  /** The verdict's key: "pfr/<name>" or "lbr/<name>". */
  key: string;
  name: string;
  what: "port forwarding" | "load balancing";
  publicIPAddress: string;
  protocol: string;
  ports: { start: number; end: number };
}

const forwardUse = (rule: PortForwardingRule): PortUse => ({
  key: `pfr/${rule.metadata.name}`,
  name: rule.metadata.name as string,
  what: "port forwarding",
  publicIPAddress: rule.spec.publicIPAddress,
  protocol: rule.spec.protocol,
  ports: rule.spec.publicPort,
});

const balancerUse = (rule: LoadBalancerRule): PortUse => ({
  key: `lbr/${rule.metadata.name}`,
  name: rule.metadata.name as string,
  what: "load balancing",
  publicIPAddress: rule.spec.publicIPAddress,
  protocol: rule.spec.protocol ?? "tcp",
  ports: { start: rule.spec.publicPort, end: rule.spec.publicPort },
});

const tooMany = (kind: string) =>
  refused("RuleLimitExceeded", `The network has the most ${kind} rules a router holds.`);

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

  // Port forwards and load balancers share each address's ports: judged together, oldest first.
  const portForwards: RouterConfig["portForwards"] = [];
  const loadBalancers: RouterConfig["loadBalancers"] = [];
  const taken: PortUse[] = [];
  const claims = [
    ...inputs.portForwards.map((forward) => ({ rule: forward, forward, use: forwardUse(forward) })),
    ...inputs.loadBalancers.map((balancer) => ({ rule: balancer, balancer, use: balancerUse(balancer) })),
  ].sort((a, b) => byAge(a.rule, b.rule));
  for (const claim of claims) {
    const { use } = claim;
    const key = use.key;
    const publicAddress = addressOf.get(use.publicIPAddress);
    if (!publicAddress) {
      verdicts.set(key, unknownAddress(use.publicIPAddress));
      continue;
    }
    if (
      staticNatted.has(use.publicIPAddress) ||
      inputs.publicAddresses.some((p) => p.metadata.name === use.publicIPAddress && p.spec.staticNat)
    ) {
      verdicts.set(
        key,
        refused(
          "StaticNatEnabled",
          `Can't create ${use.what} rule: ip address ${publicAddress} has static nat enabled.`,
        ),
      );
      continue;
    }
    const most = use.what === "load balancing" ? MAX_LOAD_BALANCERS : MAX_RULES;
    if (taken.filter((t) => t.what === use.what).length >= most) {
      verdicts.set(key, tooMany(use.what));
      continue;
    }
    const conflict = taken.find(
      (other) =>
        other.publicIPAddress === use.publicIPAddress &&
        other.protocol === use.protocol &&
        overlaps(other.ports, use.ports),
    );
    if (conflict) {
      verdicts.set(
        key,
        refused(
          "NetworkRuleConflict",
          `The range specified, ${range(use.ports)}, conflicts with rule ${conflict.name} which has ${range(conflict.ports)}`,
        ),
      );
      continue;
    }
    if ("forward" in claim) {
      const rule = claim.forward;
      // The kernel maps one port onto another, a range only onto the same ports (router-rules.ts).
      if (
        rule.spec.publicPort.start !== rule.spec.publicPort.end &&
        rule.spec.publicPort.start !== rule.spec.privatePort.start
      ) {
        verdicts.set(
          key,
          refused(
            "PortRangeRemapped",
            `A port range is forwarded to the same ports of the VM: ${range(rule.spec.publicPort)} to ${range(rule.spec.privatePort)} cannot be.`,
          ),
        );
        continue;
      }
      const guestAddress = inputs.guestAddress(rule.spec.virtualMachine);
      if (!guestAddress) {
        verdicts.set(key, notOnNetwork(rule.spec.virtualMachine, use.publicIPAddress));
        continue;
      }
      portForwards.push({
        publicAddress,
        protocol: rule.spec.protocol,
        publicPort: rule.spec.publicPort,
        guestAddress,
        privatePort: rule.spec.privatePort,
      });
      verdicts.set(key, active(`${publicAddress}:${range(use.ports)} goes to ${guestAddress}.`));
    } else {
      const rule = claim.balancer;
      // A member without an address on the network (yet) is left out; the others serve.
      const guestAddresses = rule.spec.virtualMachines.flatMap((vm) => inputs.guestAddress(vm) ?? []);
      loadBalancers.push({
        publicAddress,
        protocol: use.protocol as "tcp" | "udp",
        publicPort: rule.spec.publicPort,
        privatePort: rule.spec.privatePort,
        algorithm: rule.spec.algorithm ?? "roundrobin",
        guestAddresses,
      });
      verdicts.set(
        key,
        active(`${publicAddress}:${rule.spec.publicPort} is spread over ${guestAddresses.length} VM(s).`),
      );
    }
    taken.push(use);
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
    verdicts.set(key, active(`Open on ${publicAddress}.`));
  }

  const egress: NonNullable<RouterConfig["egress"]> = [];
  for (const rule of [...inputs.egress].sort(byAge)) {
    const key = `efr/${rule.metadata.name}`;
    if (egress.length >= MAX_RULES) {
      verdicts.set(key, tooMany("egress"));
      continue;
    }
    egress.push({
      protocol: rule.spec.protocol,
      ...(rule.spec.ports ? { ports: rule.spec.ports } : {}),
      sources: [...(rule.spec.sources ?? [])],
      destinations: [...(rule.spec.destinations ?? ["0.0.0.0/0"])],
    });
    verdicts.set(
      key,
      active(inputs.egressDefaultAllow ? "Blocks what it names." : "Lets out what it names."),
    );
  }

  if (!sourceNatAddress) return { config: undefined, verdicts };
  const others = [...addressOf.values()].filter((a) => a !== sourceNatAddress).sort();
  return {
    config: {
      sourceNatAddress,
      publicAddresses: [sourceNatAddress, ...others],
      staticNat,
      portForwards,
      loadBalancers,
      firewall,
      egressDefaultAllow: inputs.egressDefaultAllow,
      egress,
    },
    verdicts,
  };
}

// Pure: what a Network's addressing spec means. The IPAM controller allocates from this plan and
// the host agent serves it by DHCP, so both read it from here.
import type { Network } from "./index.ts";

export function ipToNumber(ip: string): number {
  return ip.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
}

export function numberToIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");
}

export interface AddressPlan {
  gateway: string;
  netmask: string;
  /** First and last address of the CIDR (network and broadcast addresses). */
  network: string;
  broadcast: string;
  /** The range VMs get addresses from: the ipRange, else the CIDR without network, gateway... */
  start: string;
  end: string;
}

/** Gateway, netmask and allocation range of a network's CIDR (defaults: first address, the rest). */
export function addressPlan(network: Network): AddressPlan | undefined {
  const { cidr } = network.spec;
  if (!cidr) return undefined;
  const [base = "", prefixText = "24"] = cidr.split("/");
  const size = 2 ** (32 - Number(prefixText));
  const first = ipToNumber(base);
  return {
    gateway: network.spec.gateway ?? numberToIp(first + 1),
    netmask: numberToIp(2 ** 32 - size),
    network: numberToIp(first),
    broadcast: numberToIp(first + size - 1),
    start: network.spec.ipRange?.start ?? numberToIp(first + 2),
    end: network.spec.ipRange?.end ?? numberToIp(first + size - 2),
  };
}

/** Whether `address` may be given to a VM: inside the CIDR, and not its network, broadcast or gateway address. */
export function addressProblem(plan: AddressPlan, address: string): string | undefined {
  const n = ipToNumber(address);
  if (n <= ipToNumber(plan.network) || n >= ipToNumber(plan.broadcast))
    return `${address} is not a host address of ${plan.network}/${32 - Math.log2(2 ** 32 - ipToNumber(plan.netmask))}`;
  if (address === plan.gateway) return `${address} is the network's gateway`;
  return undefined;
}

/** The addresses IPAM hands out, in order: the range without the gateway. */
export function* allocatableAddresses(plan: AddressPlan): Generator<string> {
  const gateway = ipToNumber(plan.gateway);
  for (let n = ipToNumber(plan.start); n <= ipToNumber(plan.end); n++) {
    if (n !== gateway) yield numberToIp(n);
  }
}

/** How many addresses the range holds (gateway excluded). */
export function allocatableCount(plan: AddressPlan): number {
  const start = ipToNumber(plan.start);
  const end = ipToNumber(plan.end);
  const gateway = ipToNumber(plan.gateway);
  return Math.max(end - start + 1, 0) - (gateway >= start && gateway <= end ? 1 : 0);
}

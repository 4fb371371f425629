// Where a template download may go. A URL (or a redirect from one) that leads to a link-local
// address reaches the cloud's instance metadata service (169.254.169.254: a provider's credentials)
// and would hand its answer to every tenant that boots the template; a redirect from an outside
// server to this host or its private network reaches the control plane. So: link-local never, and
// a redirect never goes further inside than the URL the administrator gave. The check runs on the
// address the connection really uses (a lookup hook), so DNS rebinding changes nothing.
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP } from "node:net";

export type AddressReach = "public" | "private" | "loopback" | "link-local";

const RANK: Record<AddressReach, number> = { public: 0, private: 1, loopback: 2, "link-local": 3 };

const ranges = (list: [string, number, "ipv4" | "ipv6"][]) => {
  const block = new BlockList();
  for (const [address, prefix, family] of list) block.addSubnet(address, prefix, family);
  return block;
};
const LINK_LOCAL = ranges([
  ["169.254.0.0", 16, "ipv4"],
  ["fe80::", 10, "ipv6"],
]);
const LOOPBACK = ranges([
  ["127.0.0.0", 8, "ipv4"],
  ["0.0.0.0", 8, "ipv4"],
  ["::1", 128, "ipv6"],
  ["::", 128, "ipv6"],
]);
const PRIVATE = ranges([
  ["10.0.0.0", 8, "ipv4"],
  ["172.16.0.0", 12, "ipv4"],
  ["192.168.0.0", 16, "ipv4"],
  ["100.64.0.0", 10, "ipv4"],
  ["fc00::", 7, "ipv6"],
]);

/** Pure: how far inside an address lies. IPv4-mapped IPv6 addresses count as their IPv4 address. */
export function addressReach(address: string): AddressReach {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  const ip = mapped ?? address;
  const family = isIP(ip) === 6 ? "ipv6" : "ipv4";
  if (LINK_LOCAL.check(ip, family)) return "link-local";
  if (LOOPBACK.check(ip, family)) return "loopback";
  if (PRIVATE.check(ip, family)) return "private";
  return "public";
}

/** Pure: why a connection to `address` may not be made when the download began at `origin` reach, or undefined. */
export function refusedAddress(address: string, origin: AddressReach | undefined): string | undefined {
  const reach = addressReach(address);
  if (reach === "link-local") return `${address} is link-local (the instance metadata service lives there)`;
  if (origin !== undefined && RANK[reach] > RANK[origin])
    return `a redirect from a ${origin} address may not lead to ${reach} ${address}`;
  return undefined;
}

type LookupCallback = (
  error: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/**
 * A `lookup` for node:http that refuses what `refusedAddress` refuses and records the reach of the
 * first address it allowed (the origin, for the redirects that follow).
 */
export function guardedLookup(state: { origin?: AddressReach }) {
  return (hostname: string, options: object, callback: LookupCallback): void => {
    dnsLookup(hostname, options, (error, address, family) => {
      if (error) return callback(error, address, family);
      const addresses = Array.isArray(address) ? address.map((a) => a.address) : [address];
      for (const each of addresses) {
        const why = refusedAddress(each, state.origin);
        if (why) return callback(Object.assign(new Error(why), { code: "EADDRNOTALLOWED" }), address, family);
      }
      const deepest = addresses.map(addressReach).sort((a, b) => RANK[b] - RANK[a])[0];
      if (deepest) state.origin ??= deepest;
      callback(null, address, family);
    });
  };
}

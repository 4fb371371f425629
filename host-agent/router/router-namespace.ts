// A network's router as a network namespace on its host (issue 17): one veth pair into the guest
// network's bridge, whose inner end holds the guests' gateway address, and one into the public
// bridge, whose inner end holds the network's public addresses and its default route; forwarding
// on, and the ruleset of router-rules.ts loaded in one transaction. Guest bridges then need no
// address in the host's own namespace: guests reach only what the router forwards. Every step is
// idempotent, so the agent may be killed at any line and apply again; only names with the router
// prefix are ever touched. iproute2 and nft, as for VLAN links (vlan.ts).
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { promisify } from "node:util";
import type { Owner } from "../hypervisor.ts";
import { ownerTag } from "../network-xml.ts";
import { HostProblem } from "../problem.ts";
import { GUEST_LINK, PUBLIC_LINK, type RouterRules, routerRuleset } from "./router-rules.ts";

const run = promisify(execFile);

/** Every namespace and link of a router starts with this; nothing else is touched. */
export const ROUTER_PREFIX = "sr";

export interface RouterPlumbing {
  /** Short and unique per network, e.g. the first 8 hex digits of its UID: names stay within 15 characters. */
  id: string;
  /** The guest network's bridge (libvirt's, on this host). */
  guestBridge: string;
  /** The bridge of the zone's public network on this host. */
  publicBridge: string;
  /** The guest gateway with its prefix length, e.g. 10.1.1.1/24. */
  guestAddress: string;
  /** The public addresses with their prefix length; the first is the source-NAT address. */
  publicAddresses: string[];
  /** The public network's gateway: the router's default route. */
  publicGateway: string;
  rules: RouterRules;
}

export const routerNamespace = (id: string) => `${ROUTER_PREFIX}-${id}`;
const hostLink = (id: string, side: "g" | "p") => `${ROUTER_PREFIX}${side}${id}`;
const innerLink = (id: string, side: "g" | "p") => `${ROUTER_PREFIX}${side}${id}i`;

const ID = /^[0-9a-z]{1,10}$/;

async function command(file: string, args: string[], input?: string): Promise<string> {
  try {
    if (input === undefined) return (await run(file, args)).stdout;
    return await new Promise((resolve, reject) => {
      const child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      child.on("error", reject);
      child.on("close", (code) =>
        code === 0 ? resolve(stdout) : reject(Object.assign(new Error(`exit ${code}`), { stderr })),
      );
      child.stdin.end(input);
    });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new HostProblem(
      "RouterSetupFailed",
      `${file} ${args.join(" ")}: ${stderr || (error as Error).message}`,
    );
  }
}

const ip = (...args: string[]) => command("ip", args);

/** Runs `file` inside the router's namespace (its daemons: dnsmasq). */
export const commandIn = (namespace: string, file: string, args: string[]) =>
  command("ip", ["netns", "exec", namespace, file, ...args]);
const inside = (namespace: string, ...args: string[]) => ip("-n", namespace, ...args);

async function namespaces(): Promise<string[]> {
  const listed = JSON.parse((await ip("-j", "netns", "list")).trim() || "[]") as { name: string }[];
  return listed.map((n) => n.name);
}

async function linkExists(name: string, namespace?: string): Promise<boolean> {
  const args = [...(namespace ? ["-n", namespace] : []), "-j", "link", "show"];
  return (JSON.parse(await ip(...args)) as { ifname: string }[]).some((l) => l.ifname === name);
}

/** A veth pair from `bridge` on the host into the namespace, its inner end renamed `inner`. */
async function ensureLeg(namespace: string, host: string, temporary: string, inner: string, bridge: string) {
  if (!(await linkExists(inner, namespace))) {
    // A pair half made by an agent killed mid-way is made again from scratch.
    if (await linkExists(host)) await ip("link", "delete", "dev", host);
    await ip("link", "add", host, "type", "veth", "peer", "name", temporary);
    await ip("link", "set", "dev", temporary, "netns", namespace);
    await inside(namespace, "link", "set", "dev", temporary, "name", inner);
  }
  await ip("link", "set", "dev", host, "master", bridge);
  await ip("link", "set", "dev", host, "up");
  await inside(namespace, "link", "set", "dev", inner, "up");
}

/** Makes the router of `plumbing` exist exactly as described (addresses, route, ruleset). */
export async function ensureRouter(plumbing: RouterPlumbing): Promise<void> {
  const { id } = plumbing;
  if (!ID.test(id))
    throw new HostProblem("RouterSetupFailed", `router id "${id}" is not 1 to 10 of [0-9a-z]`);
  const ruleset = routerRuleset(plumbing.rules); // refuses bad values before anything changes
  const namespace = routerNamespace(id);
  if (!(await namespaces()).includes(namespace)) await ip("netns", "add", namespace);
  await inside(namespace, "link", "set", "dev", "lo", "up");
  await ensureLeg(namespace, hostLink(id, "g"), innerLink(id, "g"), GUEST_LINK, plumbing.guestBridge);
  await ensureLeg(namespace, hostLink(id, "p"), innerLink(id, "p"), PUBLIC_LINK, plumbing.publicBridge);
  // Forwarding; a secondary public address survives the primary's removal; ARP answers only for
  // the link's own addresses (the guest gateway never on the public bridge).
  await ip(
    "netns",
    "exec",
    namespace,
    "sysctl",
    "-q",
    "-w",
    "net.ipv4.ip_forward=1",
    "net.ipv4.conf.all.promote_secondaries=1",
    "net.ipv4.conf.default.promote_secondaries=1",
    "net.ipv4.conf.all.arp_ignore=1",
    "net.ipv4.conf.all.arp_announce=2",
  );
  await setAddresses(namespace, GUEST_LINK, [plumbing.guestAddress]);
  await setAddresses(namespace, PUBLIC_LINK, plumbing.publicAddresses);
  await inside(namespace, "route", "replace", "default", "via", plumbing.publicGateway, "dev", PUBLIC_LINK);
  await command("ip", ["netns", "exec", namespace, "nft", "-f", "-"], ruleset);
}

/** The link holds exactly `wanted` (address/prefix); others are removed. */
async function setAddresses(namespace: string, link: string, wanted: readonly string[]) {
  const shown = JSON.parse(await inside(namespace, "-j", "addr", "show", "dev", link)) as {
    addr_info?: { family: string; local: string; prefixlen: number }[];
  }[];
  const current = (shown[0]?.addr_info ?? [])
    .filter((a) => a.family === "inet")
    .map((a) => `${a.local}/${a.prefixlen}`);
  for (const stale of current.filter((a) => !wanted.includes(a)))
    await inside(namespace, "addr", "del", stale, "dev", link);
  for (const missing of wanted.filter((a) => !current.includes(a)))
    await inside(namespace, "addr", "add", missing, "dev", link);
}

/** A router's id: the agent's tag first (so it finds its own), then the network; 10 characters. */
export function routerId(owner: Owner, networkUid: string): string {
  const tag = ownerTag(owner);
  return `${routerPrefix(owner)}${createHash("sha256").update(`${tag}/${networkUid}`).digest("hex").slice(0, 6)}`;
}

/** What every router id of one agent starts with. */
export const routerPrefix = (owner: Owner) => ownerTag(owner).slice(0, 4);

/** The ids of the routers on this machine whose id starts with `prefix` (one agent's). */
export async function listRouters(prefix: string): Promise<string[]> {
  const start = routerNamespace(prefix);
  return (await namespaces())
    .filter((n) => n.startsWith(start))
    .map((n) => n.slice(ROUTER_PREFIX.length + 1));
}

/** Removes every router of one agent (`routerPrefix`); the ids it removed. */
export async function removeRouters(prefix: string): Promise<string[]> {
  const ids = await listRouters(prefix);
  for (const id of ids) await removeRouter(id);
  return ids;
}

/**
 * Removes the router: the processes in its namespace (its daemons, which would keep it alive),
 * then the namespace, which takes the inner ends and so both pairs with it.
 */
export async function removeRouter(id: string): Promise<boolean> {
  const namespace = routerNamespace(id);
  if (!(await namespaces()).includes(namespace)) return false;
  const pids = (await ip("netns", "pids", namespace))
    .split("\n")
    .map(Number)
    .filter((p) => p > 0);
  for (const pid of pids)
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // gone already
    }
  await ip("netns", "delete", namespace);
  // The namespace took the inner ends, and the kernel then removes their host ends on its own.
  for (const side of ["g", "p"] as const)
    await ip("link", "delete", "dev", hostLink(id, side)).catch((error: unknown) => {
      if (!String((error as Error).message).includes("Cannot find device")) throw error;
    });
  return true;
}

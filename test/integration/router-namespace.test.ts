// A network's router as a network namespace (host-agent/router/), with the real kernel, iproute2
// and nftables: guests in namespaces of their own on a guest bridge with no address on the host,
// an "outside" namespace on the public bridge that plays the Internet (its own addresses and web
// server, in Node). Source NAT, a port forward opened only by a firewall rule, static NAT both ways, the
// host's own address out of the guests' reach, and a router applied twice or removed cleanly.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDhcp, type RouterDhcp } from "../../host-agent/router/router-dhcp.ts";
import {
  ensureRouter,
  type RouterPlumbing,
  removeRouter,
  routerNamespace,
} from "../../host-agent/router/router-namespace.ts";
import { BASE_RULES, WEB_FORWARD } from "../../host-agent/testing/router-fixtures.ts";
import { attachNamespace, fetchFrom, ip, serveIn } from "./netns.ts";
import { waitFor } from "./support.ts";

const run = promisify(execFile);
const id = randomBytes(3).toString("hex");
const GUEST_BRIDGE = `srtg${id}`;
const PUBLIC_BRIDGE = `srtp${id}`;
const OUTSIDE = `srt-out-${id}`;
const GUESTS = [`srt-g1-${id}`, `srt-g2-${id}`];
const LEASED = [`srt-g3-${id}`, `srt-g4-${id}`];
const isRoot = process.getuid?.() === 0;

/** What busybox's DHCP client got in a namespace: "bound <address> <router> <dns>", or "no lease". */
async function lease(namespace: string): Promise<string> {
  const { stdout } = await run("ip", [
    "netns",
    "exec",
    namespace,
    "busybox",
    "udhcpc",
    "-i",
    "eth0",
    "-n",
    "-q",
    "-t",
    "3",
    "-T",
    "1",
    "-s",
    leaseScript,
  ]).catch(() => ({ stdout: "" }));
  return /^bound .*$/m.exec(stdout)?.[0] ?? "no lease";
}

const macOf = async (namespace: string) =>
  (JSON.parse((await ip("-n", namespace, "-j", "link", "show", "eth0")).stdout) as { address: string }[])[0]
    ?.address as string;

let leaseScript = "";

describe.skipIf(!isRoot)("a network's router as a network namespace (needs root)", () => {
  let workDir: string;
  let dnsmasqPid = 0;
  const plumbing: RouterPlumbing = {
    id,
    guestBridge: GUEST_BRIDGE,
    publicBridge: PUBLIC_BRIDGE,
    guestAddress: "10.1.1.1/24",
    publicAddresses: ["198.51.100.10/24", "198.51.100.11/24"],
    publicGateway: "198.51.100.1",
    rules: {
      ...BASE_RULES,
      staticNat: [{ publicIp: "198.51.100.11", guestIp: "10.1.1.6" }],
      portForwards: [WEB_FORWARD],
    },
  };
  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), "stratus-router-"));
    await chmod(workDir, 0o755);
    leaseScript = join(workDir, "lease.sh");
    await writeFile(leaseScript, '#!/bin/sh\n[ "$1" = bound ] && echo "bound $ip $router $dns"\nexit 0\n', {
      mode: 0o755,
    });
    for (const bridge of [GUEST_BRIDGE, PUBLIC_BRIDGE]) {
      await ip("link", "add", bridge, "type", "bridge");
      await ip("link", "set", "dev", bridge, "up");
    }
    await attachNamespace(OUTSIDE, PUBLIC_BRIDGE, "198.51.100.1/24");
    await attachNamespace(GUESTS[0] as string, GUEST_BRIDGE, "10.1.1.5/24", "10.1.1.1");
    await attachNamespace(GUESTS[1] as string, GUEST_BRIDGE, "10.1.1.6/24", "10.1.1.1");
    // The outside's server answers with the address it sees: what the NAT made of the guest's.
    await serveIn(OUTSIDE, "198.51.100.1", "outside");
    await serveIn(GUESTS[0] as string, "10.1.1.5", "guest-1");
    await serveIn(GUESTS[1] as string, "10.1.1.6", "guest-2");
    await ensureRouter(plumbing);
  });

  afterAll(async () => {
    await removeRouter(id).catch(() => false);
    for (const namespace of [OUTSIDE, ...GUESTS, ...LEASED])
      await ip("netns", "delete", namespace).catch(() => undefined);
    for (const bridge of [GUEST_BRIDGE, PUBLIC_BRIDGE])
      await ip("link", "delete", bridge).catch(() => undefined);
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("takes guests out through the network's source-NAT address, and a static-NAT guest through its own", async () => {
    expect(await fetchFrom(GUESTS[0] as string, "http://198.51.100.1/")).toBe("outside from 198.51.100.10");
    expect(await fetchFrom(GUESTS[1] as string, "http://198.51.100.1/")).toBe("outside from 198.51.100.11");
  });

  it("forwards a public port only once a firewall rule opens it, and static NAT only what its rules allow", async () => {
    expect(await fetchFrom(OUTSIDE, "http://198.51.100.10:8080/")).toBe("unreachable");
    expect(await fetchFrom(OUTSIDE, "http://198.51.100.11/")).toBe("unreachable");
    const opened: RouterPlumbing = {
      ...plumbing,
      rules: {
        ...plumbing.rules,
        firewall: [
          {
            publicIp: "198.51.100.10",
            protocol: "tcp",
            cidrs: ["198.51.100.0/24"],
            ports: { start: 8080, end: 8080 },
          },
          {
            publicIp: "198.51.100.11",
            protocol: "tcp",
            cidrs: ["198.51.100.1/32"],
            ports: { start: 80, end: 80 },
          },
        ],
      },
    };
    await ensureRouter(opened);
    // The guests see the caller's own address: no NAT on the way in.
    expect(await fetchFrom(OUTSIDE, "http://198.51.100.10:8080/")).toBe("guest-1 from 198.51.100.1");
    expect(await fetchFrom(OUTSIDE, "http://198.51.100.11/")).toBe("guest-2 from 198.51.100.1");
    // The port forward is the only way in: the guest's own port 80 is not on the public address.
    expect(await fetchFrom(OUTSIDE, "http://198.51.100.10/")).toBe("unreachable");
    // Closed again when the rule goes.
    await ensureRouter(plumbing);
    expect(await fetchFrom(OUTSIDE, "http://198.51.100.10:8080/")).toBe("unreachable");
  });

  it("keeps the host's own addresses out of the guests' reach: the guest bridge has none", async () => {
    const bridge = JSON.parse((await ip("-j", "addr", "show", "dev", GUEST_BRIDGE)).stdout) as {
      addr_info: { family: string }[];
    }[];
    expect(bridge[0]?.addr_info.filter((a) => a.family === "inet")).toEqual([]);
    const route = JSON.parse((await ip("-j", "route", "get", "1.1.1.1")).stdout) as { prefsrc?: string }[];
    const hostAddress = route[0]?.prefsrc;
    if (hostAddress)
      expect(await fetchFrom(GUESTS[0] as string, `http://${hostAddress}:22/`)).toBe("unreachable");
    expect(await fetchFrom(GUESTS[0] as string, "http://10.1.1.1:22/")).toBe("unreachable");
  });

  it("leases each NIC only its reserved address, with the router as gateway and DNS server, and names it in DNS", async () => {
    const [known, unknown] = LEASED;
    await attachNamespace(known as string, GUEST_BRIDGE);
    await attachNamespace(unknown as string, GUEST_BRIDGE);
    const dhcp: RouterDhcp = {
      namespace: routerNamespace(id),
      stateDir: join(workDir, "dhcp"),
      guestGateway: "10.1.1.1",
      netmask: "255.255.255.0",
      networkAddress: "10.1.1.0",
      domain: "guests.test",
      upstreamDns: [],
      hosts: [{ mac: await macOf(known as string), ip: "10.1.1.7", hostname: "web-3" }],
    };
    await ensureDhcp(dhcp);
    expect(await lease(known as string)).toBe("bound 10.1.1.7 10.1.1.1 10.1.1.1");
    expect(await lease(unknown as string)).toBe("no lease");
    // The VM's name answers from the router once it has its lease.
    await ip("-n", known as string, "addr", "add", "10.1.1.7/24", "dev", "eth0");
    const script = `const r = new (require("node:dns").promises.Resolver)(); r.setServers(["10.1.1.1"]); r.resolve4("web-3.guests.test").then((a) => console.log(a.join()))`;
    expect(
      (await run("ip", ["netns", "exec", known as string, process.execPath, "-e", script])).stdout.trim(),
    ).toBe("10.1.1.7");
    // A new reservation is a reload, not a restart.
    const pid = (await readFile(join(workDir, "dhcp", "dnsmasq.pid"), "utf8")).trim();
    await ensureDhcp({
      ...dhcp,
      hosts: [...dhcp.hosts, { mac: await macOf(unknown as string), ip: "10.1.1.8", hostname: "web-4" }],
    });
    expect(await lease(unknown as string)).toBe("bound 10.1.1.8 10.1.1.1 10.1.1.1");
    expect((await readFile(join(workDir, "dhcp", "dnsmasq.pid"), "utf8")).trim()).toBe(pid);
    // It runs in the router's namespace, and goes with the router (below).
    expect((await run("ip", ["netns", "identify", pid])).stdout.trim()).toBe(routerNamespace(id));
    dnsmasqPid = Number(pid);
  });

  it("is applied again without change, and removed with everything it made", async () => {
    await ensureRouter(plumbing);
    await ensureRouter(plumbing);
    const ruleset = (await run("ip", ["netns", "exec", routerNamespace(id), "nft", "list", "ruleset"]))
      .stdout;
    expect(ruleset.match(/table ip stratus_router/g)).toHaveLength(1);
    expect(await fetchFrom(GUESTS[0] as string, "http://198.51.100.1/")).toBe("outside from 198.51.100.10");
    expect(await removeRouter(id)).toBe(true);
    expect((await ip("netns", "list")).stdout).not.toContain(routerNamespace(id));
    const links = (await ip("-j", "link", "show")).stdout;
    expect(links).not.toContain(`"srg${id}"`);
    expect(links).not.toContain(`"srp${id}"`);
    expect(await fetchFrom(GUESTS[0] as string, "http://198.51.100.1/")).toBe("unreachable");
    expect(await removeRouter(id)).toBe(false);
    await waitFor("the router's dnsmasq to end", async () => !existsSync(`/proc/${dnsmasqPid}`));
  });
});

// A network's router as a network namespace (host-agent/router/), with the real kernel, iproute2
// and nftables: guests in namespaces of their own on a guest bridge with no address on the host,
// an "outside" namespace on the public bridge that plays the Internet (its own addresses and web
// server, in Node). Source NAT, a port forward opened only by a firewall rule, static NAT both ways, the
// host's own address out of the guests' reach, and a router applied twice or removed cleanly.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ensureRouter,
  type RouterPlumbing,
  removeRouter,
  routerNamespace,
} from "../../host-agent/router/router-namespace.ts";
import { BASE_RULES, WEB_FORWARD } from "../../host-agent/testing/router-fixtures.ts";

const run = promisify(execFile);
const id = randomBytes(3).toString("hex");
const GUEST_BRIDGE = `srtg${id}`;
const PUBLIC_BRIDGE = `srtp${id}`;
const OUTSIDE = `srt-out-${id}`;
const GUESTS = [`srt-g1-${id}`, `srt-g2-${id}`];
const isRoot = process.getuid?.() === 0;

const ip = (...args: string[]) => run("ip", args);
/** An HTTP GET from a namespace (Node's fetch, 2 s): the body, or "unreachable". */
async function fetchFrom(namespace: string, url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(2000) }).then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(1))`;
  try {
    return (await run("ip", ["netns", "exec", namespace, process.execPath, "-e", script])).stdout;
  } catch {
    return "unreachable";
  }
}

/** A namespace on `bridge` through a veth pair, with an address and (for guests) a default route. */
async function attach(namespace: string, bridge: string, address: string, gateway?: string) {
  await ip("netns", "add", namespace);
  const host = `v${namespace.replace(/-/g, "").slice(-10)}`;
  await ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", namespace);
  await ip("link", "set", "dev", host, "master", bridge, "up");
  await ip("-n", namespace, "link", "set", "dev", "lo", "up");
  await ip("-n", namespace, "link", "set", "dev", "eth0", "up");
  await ip("-n", namespace, "addr", "add", address, "dev", "eth0");
  if (gateway) await ip("-n", namespace, "route", "add", "default", "via", gateway);
}

describe.skipIf(!isRoot)("a network's router as a network namespace (needs root)", () => {
  const servers: ReturnType<typeof spawn>[] = [];
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
  /** A web server in a namespace answering its name and the address the request came from. */
  async function serve(namespace: string, address: string, name: string) {
    const script = `require("node:http").createServer((q, r) => r.end(${JSON.stringify(name)} + " from " + q.socket.remoteAddress)).listen(80, ${JSON.stringify(address)}, () => console.log("listening"))`;
    const server = spawn("ip", ["netns", "exec", namespace, process.execPath, "-e", script]);
    servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.stdout?.once("data", () => resolve());
      server.once("exit", (code) => reject(new Error(`the server in ${namespace} exited with ${code}`)));
    });
  }

  beforeAll(async () => {
    for (const bridge of [GUEST_BRIDGE, PUBLIC_BRIDGE]) {
      await ip("link", "add", bridge, "type", "bridge");
      await ip("link", "set", "dev", bridge, "up");
    }
    await attach(OUTSIDE, PUBLIC_BRIDGE, "198.51.100.1/24");
    await attach(GUESTS[0] as string, GUEST_BRIDGE, "10.1.1.5/24", "10.1.1.1");
    await attach(GUESTS[1] as string, GUEST_BRIDGE, "10.1.1.6/24", "10.1.1.1");
    // The outside's server answers with the address it sees: what the NAT made of the guest's.
    await serve(OUTSIDE, "198.51.100.1", "outside");
    await serve(GUESTS[0] as string, "10.1.1.5", "guest-1");
    await serve(GUESTS[1] as string, "10.1.1.6", "guest-2");
    await ensureRouter(plumbing);
  });

  afterAll(async () => {
    for (const server of servers) server.kill();
    await removeRouter(id).catch(() => false);
    for (const namespace of [OUTSIDE, ...GUESTS])
      await ip("netns", "delete", namespace).catch(() => undefined);
    for (const bridge of [GUEST_BRIDGE, PUBLIC_BRIDGE])
      await ip("link", "delete", bridge).catch(() => undefined);
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
  });
});

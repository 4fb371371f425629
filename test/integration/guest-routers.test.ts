// Isolated networks with their router, end to end on real QEMU (issue 17): a zone with a public
// network (a bridge of the host's that only an "outside" namespace of the test shares, holding the
// public gateway and a web server of its own), an isolated network whose router the network
// controller places on the agent's host, and tiny guests that get their addresses from the router's
// DHCP. Resources are applied with kubectl, as a platform team would. Shown: the guest goes out
// through the source-NAT address; a port forward answers from outside only while a firewall rule
// opens it; static NAT both ways; egress rules; the metadata service; a load balancer over two
// guests; conflicting rules refused in CloudStack's words; the host's own addresses out of reach;
// the router gone with its host's fence and back with it; and the router, its addresses and claims
// gone with the network.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NETWORK_OFFERING_ID } from "../../apiserver/views.ts";
import {
  type Network,
  type PortForwardingRule,
  type PublicIPAddress,
  type PublicIPClaim,
  Resources,
  type VirtualMachine,
} from "../../crds/index.ts";
import { RESOURCE_LIMITS_QUOTA, RESOURCE_QUOTAS } from "../../crds/resource-limits.ts";
import { canRunQemu, ensureLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { bridgeName } from "../../host-agent/network-xml.ts";
import { routerId, routerNamespace } from "../../host-agent/router/router-namespace.ts";
import type { KubeClient, KubeObject, ResourceType } from "../../runtime/client.ts";
import { catalogReaderRole, jobOf, makeAccount, cs as runCs, signedRequest } from "./cloudstack-accounts.ts";
import { readConsoleUntil, typeOnConsole } from "./guest-console.ts";
import { attachNamespace, fetchFrom, ip, type NamespaceServer, serveIn } from "./netns.ts";
import type { ApiServerProcess, StratusProcess } from "./processes.ts";
import {
  guestCatalog,
  printAgentLogOnFailure,
  startGuestControlPlane,
  startQemuHostAgent,
  stopGuestCloud,
} from "./qemu-agent.ts";
import { agentOwner, kubectl, serveTinyGuest, waitFor, waitUntilGone } from "./support.ts";

const run = promisify(execFile);
const escaped = (text: string) => text.replaceAll(".", "\\.");
type Row = Record<string, unknown>;

describe.skipIf(!canRunQemu())("isolated networks with their router (needs root and libvirt/QEMU)", () => {
  const suffix = randomBytes(3).toString("hex");
  const host = `rt-${suffix}`;
  const zone = `rt-${suffix}`;
  const publicBridge = `srpb${suffix}`;
  const outside = `srt-world-${suffix}`;
  // CGNAT space for the "public" side and a random guest subnet, clear of other tests.
  const publicNet = `100.${64 + Math.floor(Math.random() * 60)}.${Math.floor(Math.random() * 250)}`;
  const guestNet = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}`;
  const workDir = `/var/lib/stratus/routers-${suffix}`;
  let client: KubeClient;
  let namespace: string;
  let kubeconfigPath: string;
  let agent: StratusProcess | undefined;
  let operator: StratusProcess | undefined;
  let api: ApiServerProcess | undefined;
  let world: NamespaceServer;

  const apply = async (manifest: Record<string, unknown>) =>
    kubectl(kubeconfigPath, ["apply", "-n", namespace, "-f", "-"], JSON.stringify(manifest));
  const resource = (kind: string, name: string, spec: Record<string, unknown>) => ({
    apiVersion: "stratus.io/v1alpha1",
    kind,
    metadata: { name, namespace },
    spec,
  });
  const startAgent = () =>
    startQemuHostAgent({
      kubeconfigPath,
      host,
      zone,
      leaseNamespace: namespace,
      workDir,
      args: ["--shutdown-grace=3"],
    });
  const network = () => client.get<Network>(Resources.networks, "rt-net", namespace);
  const condition = (object: { status?: { conditions?: { type: string }[] } }, type: string) =>
    object.status?.conditions?.find((c) => c.type === type) as
      | { type: string; status: string; reason: string; message: string }
      | undefined;
  const accepted = (name: string, status: "True" | "False") =>
    waitFor(`rule ${name} Accepted=${status}`, async () => {
      const rule = await client.get<PortForwardingRule>(Resources.portForwardingRules, name, namespace);
      const verdict = condition(rule, "Accepted");
      return verdict?.status === status ? verdict : undefined;
    });
  /** The router's nftables ruleset, read from its namespace. */
  const ruleset = async () => {
    const net = await network();
    const id = routerId(await agentOwner(client, host), net.metadata.uid as string);
    return (await run("ip", ["netns", "exec", routerNamespace(id), "nft", "list", "ruleset"])).stdout;
  };
  const bootGuest = async (name: string, extra: Record<string, unknown> = {}) => {
    await apply(
      resource("VirtualMachine", name, {
        zone,
        serviceOffering: `rt-${suffix}`,
        template: `rt-${suffix}`,
        nics: [{ name: "eth0", network: "rt-net" }],
        ...extra,
      }),
    );
    const vm = await waitFor(
      `${name} Running`,
      async () => {
        const found = await client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
        return found.status?.state === "Running" && found.status.nics?.[0]?.ipAddress ? found : undefined;
      },
      { timeoutMs: 180_000 },
    );
    const consoleSocket = join(workDir, "console", `${vm.metadata.uid}.sock`);
    const address = vm.status?.nics?.[0]?.ipAddress as string;
    // Its address came from the router's DHCP: the bridge on the host serves none.
    await readConsoleUntil(consoleSocket, new RegExp(`stratus-guest: ip: ${escaped(address)}/24`), 120_000);
    return { consoleSocket, address };
  };
  const probe = async (consoleSocket: string, target: string, port: number) => {
    await typeOnConsole(consoleSocket, `stratus-probe ${target} ${port}`);
    const seen = await readConsoleUntil(
      consoleSocket,
      new RegExp(`stratus-guest: probe ${escaped(target)}:${port} (open|closed)`),
    );
    return seen.endsWith("open") ? "open" : "closed";
  };
  const serveOnGuest = async (consoleSocket: string, port: number, word: string) => {
    await typeOnConsole(consoleSocket, `stratus-serve ${port} ${word}`);
    await readConsoleUntil(consoleSocket, new RegExp(`stratus-guest: serving ${port}`));
  };

  beforeAll(async () => {
    await ensureLibvirtDaemons();
    await mkdir(workDir, { recursive: true, mode: 0o755 });
    // The public network: a bridge with no address of the host's; the outside holds the gateway.
    await ip("link", "add", publicBridge, "type", "bridge");
    await ip("link", "set", "dev", publicBridge, "up");
    await attachNamespace(outside, publicBridge, `${publicNet}.1/24`);
    world = await serveIn(outside, `${publicNet}.1`, "outside", 7000);
    const tinyGuest = await serveTinyGuest();
    ({ kubeconfigPath, client, namespace } = await guestCatalog({
      prefix: "rt",
      suffix,
      zone,
      memory: "128Mi",
      template: { source: tinyGuest },
      network: { name: "rt-net", cidr: `${guestNet}.0/24` },
    }));
    await client.create(Resources.zones, {
      metadata: { name: zone },
      spec: {
        publicNetwork: {
          bridge: publicBridge,
          cidr: `${publicNet}.0/24`,
          gateway: `${publicNet}.1`,
          ranges: [{ start: `${publicNet}.10`, end: `${publicNet}.19` }],
        },
      },
    });
    ({ operator, api } = await startGuestControlPlane({
      kubeconfigPath,
      client,
      namespace,
      workDir,
      name: `rt-${suffix}`,
    }));
    agent = await startAgent();
  }, 300_000);

  printAgentLogOnFailure(() => agent);

  afterAll(async () => {
    await stopGuestCloud({ agent, operator, api, client, host, workDir });
    await ip("netns", "delete", outside).catch(() => undefined);
    await ip("link", "delete", publicBridge).catch(() => undefined);
    await client?.delete(Resources.zones, zone).catch(() => undefined);
  });

  let web: { consoleSocket: string; address: string };
  let sourceNat: string;

  it("places the router on the host and takes the guest out through the network's source-NAT address; the host stays out of reach", async () => {
    web = await bootGuest("web");
    const net = await network();
    expect(net.status?.router?.host).toBe(host);
    sourceNat = net.status?.router?.sourceNatAddress as string;
    expect(sourceNat).toMatch(new RegExp(`^${escaped(publicNet)}\\.1[0-9]$`));
    expect(condition(net, "RouterPlaced")).toMatchObject({ status: "True", reason: "Placed" });
    const shown = (await kubectl(kubeconfigPath, ["get", "vnet", "rt-net", "-n", namespace])).stdout;
    expect(shown).toContain(sourceNat);
    expect(shown).toContain(host);
    const pip = await client.get<PublicIPAddress>(Resources.publicIPAddresses, "rt-net-snat", namespace);
    expect(pip.status).toMatchObject({ address: sourceNat, sourceNat: true });

    expect(await probe(web.consoleSocket, `${publicNet}.1`, 7000)).toBe("open");
    expect(world.peers).toContain(sourceNat);
    expect(world.peers).not.toContain(web.address);

    // The guest bridge has no address in the host's namespace, and no service of the host answers.
    const bridge = JSON.parse(
      (
        await ip(
          "-j",
          "addr",
          "show",
          "dev",
          bridgeName(await agentOwner(client, host), net.metadata.uid as string),
        )
      ).stdout,
    ) as { addr_info: { family: string }[] }[];
    expect(bridge[0]?.addr_info.filter((a) => a.family === "inet")).toEqual([]);
    const hostService = createServer((socket) => socket.end());
    await new Promise<void>((resolve) => hostService.listen(0, "0.0.0.0", resolve));
    try {
      const port = (hostService.address() as AddressInfo).port;
      const route = JSON.parse((await ip("-j", "route", "get", "1.1.1.1")).stdout) as { prefsrc?: string }[];
      for (const address of [route[0]?.prefsrc, "127.0.0.1", `${guestNet}.1`].filter(Boolean) as string[])
        expect(await probe(web.consoleSocket, address, port)).toBe("closed");
    } finally {
      hostService.close();
    }
  });

  it("answers at public-ip:port through a port forward only while a firewall rule opens it", async () => {
    await serveOnGuest(web.consoleSocket, 80, "hello-web");
    await apply(
      resource("PortForwardingRule", "web-8080", {
        publicIPAddress: "rt-net-snat",
        protocol: "tcp",
        publicPort: { start: 8080, end: 8080 },
        privatePort: { start: 80, end: 80 },
        virtualMachine: "web",
      }),
    );
    await accepted("web-8080", "True");
    await waitFor("the router to forward 8080", async () =>
      (await ruleset()).includes(`dnat to ${web.address}:80`),
    );
    expect(await fetchFrom(outside, `http://${sourceNat}:8080/`)).toBe("unreachable");

    await apply(
      resource("FirewallRule", "web-8080", {
        publicIPAddress: "rt-net-snat",
        protocol: "tcp",
        ports: { start: 8080, end: 8080 },
        cidrs: [`${publicNet}.0/24`],
      }),
    );
    expect(
      await waitFor("the web server from outside", async () => {
        const body = await fetchFrom(outside, `http://${sourceNat}:8080/`);
        return body === "unreachable" ? undefined : body;
      }),
    ).toBe("hello-web\n");

    // The same public port twice is refused, in CloudStack's words.
    await apply(
      resource("PortForwardingRule", "web-again", {
        publicIPAddress: "rt-net-snat",
        protocol: "tcp",
        publicPort: { start: 8000, end: 8100 },
        privatePort: { start: 8000, end: 8100 },
        virtualMachine: "web",
      }),
    );
    expect((await accepted("web-again", "False")).message).toBe(
      "The range specified, 8000-8100, conflicts with rule web-8080 which has 8080",
    );

    await kubectl(kubeconfigPath, ["delete", "-n", namespace, "portforwardingrule", "web-8080"]);
    await waitFor("the port forward to close", async () =>
      (await fetchFrom(outside, `http://${sourceNat}:8080/`)) === "unreachable" ? true : undefined,
    );
  });

  it("maps a static-NAT address to the guest both ways, and refuses a port forward on it", async () => {
    await apply(
      resource("PublicIPAddress", "web-ip", { network: "rt-net", staticNat: { virtualMachine: "web" } }),
    );
    const pip = await waitFor("the static NAT", async () => {
      const found = await client.get<PublicIPAddress>(Resources.publicIPAddresses, "web-ip", namespace);
      return condition(found, "StaticNat")?.status === "True" ? found : undefined;
    });
    const natAddress = pip.status?.address as string;
    expect(natAddress).not.toBe(sourceNat);
    await apply(
      resource("FirewallRule", "web-ip-80", {
        publicIPAddress: "web-ip",
        protocol: "tcp",
        ports: { start: 80, end: 80 },
        cidrs: ["0.0.0.0/0"],
      }),
    );
    expect(
      await waitFor("the guest at its static-NAT address", async () => {
        const body = await fetchFrom(outside, `http://${natAddress}/`);
        return body === "unreachable" ? undefined : body;
      }),
    ).toBe("hello-web\n");
    const before = world.peers.length;
    expect(await probe(web.consoleSocket, `${publicNet}.1`, 7000)).toBe("open");
    expect(world.peers.slice(before)).toContain(natAddress);

    await apply(
      resource("PortForwardingRule", "on-nat", {
        publicIPAddress: "web-ip",
        protocol: "tcp",
        publicPort: { start: 22, end: 22 },
        privatePort: { start: 22, end: 22 },
        virtualMachine: "web",
      }),
    );
    expect(await accepted("on-nat", "False")).toMatchObject({ reason: "StaticNatEnabled" });
  });

  it("blocks what an egress rule names, and with egressPolicy Deny lets out only what a rule allows", async () => {
    const outsideReached = (expected: "open" | "closed") =>
      waitFor(`the outside ${expected} to the guest`, async () =>
        (await probe(web.consoleSocket, `${publicNet}.1`, 7000)) === expected ? true : undefined,
      );
    const egress = (name: string) =>
      apply(
        resource("EgressFirewallRule", name, {
          network: "rt-net",
          protocol: "tcp",
          ports: { start: 7000, end: 7000 },
          destinations: [`${publicNet}.1/32`],
        }),
      );
    await egress("block-world");
    await outsideReached("closed");
    await kubectl(kubeconfigPath, ["delete", "-n", namespace, "egressfirewallrule", "block-world"]);
    await outsideReached("open");

    await client.mergePatch(Resources.networks, "rt-net", namespace, { spec: { egressPolicy: "Deny" } });
    await outsideReached("closed");
    await egress("allow-world");
    await outsideReached("open");
    await kubectl(kubeconfigPath, ["delete", "-n", namespace, "egressfirewallrule", "allow-world"]);
    await client.mergePatch(Resources.networks, "rt-net", namespace, { spec: { egressPolicy: "Allow" } });
    await outsideReached("open");
  });

  it("serves each guest its own user data and metadata from the router, and spreads a load-balancer rule's port over two guests", async () => {
    await kubectl(
      kubeconfigPath,
      ["apply", "-n", namespace, "-f", "-"],
      JSON.stringify({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "web2-userdata", namespace },
        stringData: { userdata: "#cloud-config\nweb2-marker: true\n" },
      }),
    );
    const web2 = await bootGuest("web2", { userDataSecret: "web2-userdata" });
    // The router's metadata service answers each guest its own data, as CloudStack's virtual router.
    const fetched = async (console: string, path: string) => {
      const url = `${guestNet}.1/latest/${path}`;
      await typeOnConsole(console, `stratus-fetch ${guestNet}.1 /latest/${path}`);
      const line = await readConsoleUntil(
        console,
        new RegExp(`stratus-guest: fetched ${escaped(url)} \\[[^\\]\\r\\n]*\\]`),
      );
      return line.slice(line.indexOf("[") + 1, -1);
    };
    expect(await fetched(web2.consoleSocket, "user-data")).toBe("#cloud-config|web2-marker: true|");
    expect(await fetched(web2.consoleSocket, "meta-data/local-hostname")).toBe("web2");
    const web2Vm = await client.get<VirtualMachine>(Resources.virtualMachines, "web2", namespace);
    expect(await fetched(web2.consoleSocket, "meta-data/instance-id")).toBe(web2Vm.metadata.uid);
    expect(await fetched(web2.consoleSocket, "meta-data")).toContain("local-ipv4|");
    // The other guest gets its own (none), never web2's.
    expect(await fetched(web.consoleSocket, "user-data")).toBe("");
    expect(await fetched(web.consoleSocket, "meta-data/local-hostname")).toBe("web");
    await serveOnGuest(web2.consoleSocket, 80, "hello-web2");
    await apply(resource("PublicIPAddress", "lb-ip", { network: "rt-net" }));
    await apply(
      resource("LoadBalancerRule", "web-lb", {
        publicIPAddress: "lb-ip",
        publicPort: 80,
        privatePort: 80,
        virtualMachines: ["web", "web2"],
      }),
    );
    await apply(
      resource("FirewallRule", "lb-80", {
        publicIPAddress: "lb-ip",
        protocol: "tcp",
        ports: { start: 80, end: 80 },
        cidrs: ["0.0.0.0/0"],
      }),
    );
    const lbAddress = await waitFor("the load balancer's address", async () => {
      const pip = await client.get<PublicIPAddress>(Resources.publicIPAddresses, "lb-ip", namespace);
      return pip.status?.address;
    });
    const seen = new Set<string>();
    await waitFor("both guests to answer at the load balancer", async () => {
      seen.add(await fetchFrom(outside, `http://${lbAddress}/`));
      return seen.has("hello-web\n") && seen.has("hello-web2\n") ? true : undefined;
    });
    expect([...seen].filter((body) => body !== "unreachable").sort()).toEqual([
      "hello-web\n",
      "hello-web2\n",
    ]);
    const shown = (await kubectl(kubeconfigPath, ["get", "lbr", "web-lb", "-n", namespace])).stdout;
    expect(shown).toMatch(/web-lb\s+lb-ip\s+tcp\s+80\s+80\s+roundrobin\s+Active/);

    // Down to one VM: only it answers.
    await apply(
      resource("LoadBalancerRule", "web-lb", {
        publicIPAddress: "lb-ip",
        publicPort: 80,
        privatePort: 80,
        virtualMachines: ["web2"],
      }),
    );
    await waitFor("the load balancer to follow its VMs", async () => {
      const bodies = new Set<string>();
      for (let i = 0; i < 4; i++) bodies.add(await fetchFrom(outside, `http://${lbAddress}/`));
      return bodies.size === 1 && bodies.has("hello-web2\n") ? true : undefined;
    });
    // This host has room for two guests: the next test's account needs one.
    await client.delete(Resources.virtualMachines, "web2", namespace);
    await waitUntilGone(client, Resources.virtualMachines, "web2", namespace, { timeoutMs: 120_000 });
  });

  it("gives a CloudStack user the same through cs: an address, a port forward that opens its firewall, isolation from the other account", async () => {
    const bob = await makeAccount(client, {
      keysNamespace: namespace,
      name: "rt-bob",
      suffix,
      clusterRoles: [await catalogReaderRole(client, `rt-catalog-${suffix}`)],
    });
    const cs = async (command: string, args: Record<string, string> = {}) => {
      const answer = await runCs(api?.endpoint as string, bob, command, args);
      expect(answer.stderr, `${command}: ${answer.stdout}`).toBe("");
      return answer.json;
    };
    const uidOf = async (type: ResourceType, name: string) =>
      (await client.get<KubeObject>(type, name)).metadata.uid as string;
    const bobNet = `10.${100 + ((Number.parseInt(guestNet.split(".")[1] as string, 10) - 99) % 100)}.${guestNet.split(".")[2]}`;
    const network = (
      await cs("createNetwork", {
        name: "bob-net",
        displaytext: "bob-net",
        networkofferingid: NETWORK_OFFERING_ID,
        zoneid: await uidOf(Resources.zones, zone),
        gateway: `${bobNet}.1`,
        netmask: "255.255.255.0",
      })
    ).network as Row;
    const deployed = (
      await cs("deployVirtualMachine", {
        name: "bob-web",
        serviceofferingid: await uidOf(Resources.serviceOfferings, `rt-${suffix}`),
        templateid: await uidOf(Resources.templates, `rt-${suffix}`),
        zoneid: await uidOf(Resources.zones, zone),
        networkids: network.id as string,
      })
    ).virtualmachine as Row;
    const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "bob-web", bob.namespace);
    const bobAddress = vm.status?.nics?.[0]?.ipAddress as string;
    const bobConsole = join(workDir, "console", `${vm.metadata.uid}.sock`);
    await readConsoleUntil(bobConsole, new RegExp(`stratus-guest: ip: ${escaped(bobAddress)}/24`), 120_000);

    // The network's source-NAT address is listed; it cannot be released.
    const listed = (await cs("listPublicIpAddresses", { associatednetworkid: network.id as string }))
      .publicipaddress as Row[];
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({
      issourcenat: true,
      state: "Allocated",
      associatednetworkname: "bob-net",
    });
    const refused = await signedRequest(api?.endpoint as string, bob, {
      command: "disassociateIpAddress",
      id: listed[0]?.id as string,
    });
    expect(refused.status).toBe(431);
    expect(String(refused.body.disassociateipaddressresponse?.errortext)).toContain("source nat");

    const address = (await cs("associateIpAddress", { networkid: network.id as string })).ipaddress as Row;
    expect(address).toMatchObject({ issourcenat: false, state: "Allocated" });
    const publicIp = address.ipaddress as string;
    expect(publicIp).toMatch(new RegExp(`^${escaped(publicNet)}\\.1[0-9]$`));

    await serveOnGuest(bobConsole, 80, "hello-bob");
    const rule = (
      await cs("createPortForwardingRule", {
        ipaddressid: address.id as string,
        protocol: "tcp",
        publicport: "8081",
        privateport: "80",
        virtualmachineid: deployed.id as string,
      })
    ).portforwardingrule as Row;
    expect(rule).toMatchObject({
      state: "Active",
      publicport: "8081",
      privateport: "80",
      vmguestip: bobAddress,
    });
    // openfirewall, CloudStack's default, opened the port: the guest answers from outside.
    expect(
      await waitFor("bob's web server from outside", async () => {
        const body = await fetchFrom(outside, `http://${publicIp}:8081/`);
        return body === "unreachable" ? undefined : body;
      }),
    ).toBe("hello-bob\n");
    const firewall = (await cs("listFirewallRules", { ipaddressid: address.id as string }))
      .firewallrule as Row[];
    expect(firewall).toEqual([
      expect.objectContaining({ protocol: "tcp", startport: 8081, cidrlist: "0.0.0.0/0" }),
    ]);

    // The same port again is refused in CloudStack's words, and leaves no rule behind.
    const conflict = await jobOf(api?.endpoint as string, bob, {
      command: "createPortForwardingRule",
      ipaddressid: address.id as string,
      protocol: "tcp",
      publicport: "8081",
      privateport: "22",
      virtualmachineid: deployed.id as string,
    });
    expect(conflict.job).toMatchObject({
      jobstatus: 2,
      jobresultcode: 431,
      jobresult: { errortext: expect.stringContaining("8081, conflicts with rule") },
    });
    await waitFor("the refused rule to go", async () =>
      (
        (await cs("listPortForwardingRules", { ipaddressid: address.id as string }))
          .portforwardingrule as Row[]
      ).length === 1
        ? true
        : undefined,
    );

    // Two accounts' guests cannot reach each other's private addresses.
    expect(await probe(bobConsole, web.address, 80)).toBe("closed");
    expect(await probe(web.consoleSocket, bobAddress, 80)).toBe("closed");

    // An egress rule through the API keeps bob's guest from the outside's port.
    expect(await probe(bobConsole, `${publicNet}.1`, 7000)).toBe("open");
    const egress = (
      await cs("createEgressFirewallRule", {
        networkid: network.id as string,
        protocol: "tcp",
        startport: "7000",
        endport: "7000",
        destcidrlist: `${publicNet}.1/32`,
      })
    ).firewallrule as Row;
    expect(egress).toMatchObject({
      state: "Active",
      destcidrlist: `${publicNet}.1/32`,
      traffictype: "Egress",
    });
    await waitFor("bob's guest kept in", async () =>
      (await probe(bobConsole, `${publicNet}.1`, 7000)) === "closed" ? true : undefined,
    );
    expect(
      ((await cs("listEgressFirewallRules", { networkid: network.id as string })).firewallrule as Row[])
        .length,
    ).toBe(1);
    await cs("deleteEgressFirewallRule", { id: egress.id as string });
    await waitFor("bob's guest out again", async () =>
      (await probe(bobConsole, `${publicNet}.1`, 7000)) === "open" ? true : undefined,
    );

    // A load balancer through the API: created, given the VM, answering; leastconn refused.
    const lbAddress = (await cs("associateIpAddress", { networkid: network.id as string })).ipaddress as Row;
    const leastconn = await signedRequest(api?.endpoint as string, bob, {
      command: "createLoadBalancerRule",
      publicipid: lbAddress.id as string,
      name: "bob-lb",
      algorithm: "leastconn",
      publicport: "80",
      privateport: "80",
    });
    expect(leastconn.status).toBe(431);
    const balancer = (
      await cs("createLoadBalancerRule", {
        publicipid: lbAddress.id as string,
        name: "bob-lb",
        algorithm: "source",
        publicport: "80",
        privateport: "80",
      })
    ).loadbalancer as Row;
    expect(balancer).toMatchObject({
      name: "bob-lb",
      algorithm: "source",
      state: "Active",
      publicip: lbAddress.ipaddress,
    });
    await cs("assignToLoadBalancerRule", {
      id: balancer.id as string,
      virtualmachineids: deployed.id as string,
    });
    expect(
      await waitFor("bob's load balancer from outside", async () => {
        const body = await fetchFrom(outside, `http://${lbAddress.ipaddress}/`);
        return body === "unreachable" ? undefined : body;
      }),
    ).toBe("hello-bob\n");
    const instances = (await cs("listLoadBalancerRuleInstances", { id: balancer.id as string }))
      .loadbalancerruleinstance as Row[];
    expect(instances.map((vm) => vm.name)).toEqual(["bob-web"]);
    expect(
      ((await cs("listLoadBalancerRules", { name: "bob-lb" })).loadbalancer as Row[]).map((r) => r.id),
    ).toEqual([balancer.id]);
    await cs("removeFromLoadBalancerRule", {
      id: balancer.id as string,
      virtualmachineids: deployed.id as string,
    });
    expect(await fetchFrom(outside, `http://${lbAddress.ipaddress}/`)).toBe("unreachable");
    await cs("deleteLoadBalancerRule", { id: balancer.id as string });
    await cs("disassociateIpAddress", { id: lbAddress.id as string });

    await cs("deletePortForwardingRule", { id: rule.id as string });
    await waitFor("bob's port forward to close", async () =>
      (await fetchFrom(outside, `http://${publicIp}:8081/`)) === "unreachable" ? true : undefined,
    );
    await waitFor("its firewall rule to go with it", async () =>
      (await cs("listFirewallRules", { ipaddressid: address.id as string })).count === undefined
        ? true
        : undefined,
    );
    await cs("disassociateIpAddress", { id: address.id as string });
    expect((await cs("listPublicIpAddresses", { associatednetworkid: network.id as string })).count).toBe(1);
    // The account's public-IP limit (resource type 1) counts the source-NAT address: none is left.
    await client.apply(
      RESOURCE_QUOTAS,
      {
        apiVersion: "v1",
        kind: "ResourceQuota",
        metadata: { name: RESOURCE_LIMITS_QUOTA, namespace: bob.namespace },
        spec: { hard: { "count/publicipaddresses.stratus.io": "1" } },
      },
      { fieldManager: "rt-test" },
    );
    const overLimit = await waitFor("the public-IP limit to be counted", async () => {
      const answer = await signedRequest(api?.endpoint as string, bob, {
        command: "associateIpAddress",
        networkid: network.id as string,
      });
      return answer.status === 535 ? answer : undefined;
    });
    expect(String(overLimit.body.associateipaddressresponse?.errortext)).toContain("'public_ip'");
    await cs("destroyVirtualMachine", { id: deployed.id as string, expunge: "true" });
  });

  it("takes the router down with its host (the fence watchdog), and makes it again when the host is back", async () => {
    const natAddress = (await client.get<PublicIPAddress>(Resources.publicIPAddresses, "web-ip", namespace))
      .status?.address as string;
    expect(await fetchFrom(outside, `http://${natAddress}/`)).toBe("hello-web\n");
    const net = await network();
    const id = routerId(await agentOwner(client, host), net.metadata.uid as string);
    await agent?.stop("SIGKILL");
    // Past the Lease's deadline the watchdog removes the router: its addresses answer nowhere.
    await waitFor(
      "the watchdog to remove the router",
      async () => ((await ip("netns", "list")).stdout.includes(routerNamespace(id)) ? undefined : true),
      { timeoutMs: 90_000 },
    );
    expect(await fetchFrom(outside, `http://${natAddress}/`)).toBe("unreachable");
    const unplaced = await waitFor(
      "the network to lose its router's host",
      async () => {
        const placed = condition(await network(), "RouterPlaced");
        return placed?.status === "False" ? placed : undefined;
      },
      { timeoutMs: 90_000 },
    );
    expect(unplaced.reason).toBe("NoReadyHost");
    agent = await startAgent();
    expect(
      await waitFor(
        "the guest at its static-NAT address again",
        async () => {
          const body = await fetchFrom(outside, `http://${natAddress}/`);
          return body === "unreachable" ? undefined : body;
        },
        { timeoutMs: 120_000 },
      ),
    ).toBe("hello-web\n");
    expect((await network()).status?.router?.host).toBe(host);
  });

  it("removes the router, its public addresses and their claims with the network", async () => {
    const net = await network();
    const id = routerId(await agentOwner(client, host), net.metadata.uid as string);
    await client.delete(Resources.virtualMachines, "web", namespace);
    await waitUntilGone(client, Resources.virtualMachines, "web", namespace, { timeoutMs: 120_000 });
    await client.delete(Resources.networks, "rt-net", namespace);
    await waitUntilGone(client, Resources.networks, "rt-net", namespace, { timeoutMs: 60_000 });
    await waitFor("the router to go", async () =>
      (await ip("netns", "list")).stdout.includes(routerNamespace(id)) ? undefined : true,
    );
    await waitFor("the public addresses to be released", async () => {
      const claims = (await client.list<PublicIPClaim>(Resources.publicIPClaims)).items.filter(
        (c) => c.spec.holder.namespace === namespace,
      );
      return claims.length === 0 ? true : undefined;
    });
    // The addresses made with kubectl went too, and the rules on them.
    for (const type of [
      Resources.publicIPAddresses,
      Resources.portForwardingRules,
      Resources.firewallRules,
      Resources.loadBalancerRules,
    ])
      await waitFor(`no ${type.plural} left`, async () =>
        (await client.list(type, { namespace })).items.length === 0 ? true : undefined,
      );
  });
});

// The CloudStack-compatible API as a real process, driven by the real Python `cs` client (Debian
// python3-cs) against the whole stack: operator, two simulated hosts, API keys in Secrets mapped
// to Kubernetes users, RBAC through impersonation.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { canonicalString, sign } from "../../apiserver/signature.ts";
import { Resources } from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import {
  type Account,
  catalogReaderRole,
  makeAccount as makeCloudStackAccount,
  cs as runCs,
  signedRequest,
} from "./cloudstack-accounts.ts";
import { type StratusProcess, startApiServer, startCloudStackCloud } from "./processes.ts";
import { serveTinyImage, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const runFile = promisify(execFile);
const PYTHON = "/usr/bin/python3";
const hasCs =
  existsSync("/usr/lib/python3/dist-packages/cs/__init__.py") &&
  existsSync("/usr/lib/python3/dist-packages/libcloud/__init__.py");
const suffix = randomBytes(3).toString("hex");
const ZONE = `cs-zone-${suffix}`;

describe.skipIf(!hasCs)(
  "the CloudStack API, driven by real clients (needs python3-cs, python3-libcloud)",
  () => {
    let client: KubeClient;
    let endpoint: string;
    let workDir: string;
    const processes: StratusProcess[] = [];
    let alice: Account;
    let keysNamespace: string;
    let bob: Account;

    const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
      runCs(endpoint, account, command, args);
    const raw = (
      account: Account,
      params: Record<string, string>,
      tamper?: (p: Record<string, string>) => void,
    ) => signedRequest(endpoint, account, params, tamper);
    const makeAccount = (keysNamespace: string, name: string, catalogRole: string) =>
      makeCloudStackAccount(client, { keysNamespace, name, suffix, clusterRoles: [catalogRole] });

    beforeAll(async () => {
      const controlPlane = await sharedControlPlane();
      client = new KubeClient(controlPlane.kubeConfig);
      keysNamespace = await useNamespace(controlPlane.kubeConfig, "keys");
      const catalogRole = await catalogReaderRole(client, `cloudstack-catalog-${suffix}`);
      alice = await makeAccount(keysNamespace, "alice", catalogRole);
      bob = await makeAccount(keysNamespace, "bob", catalogRole);

      workDir = await mkdtemp(join(tmpdir(), "stratus-cs-"));
      const { url, checksum } = await serveTinyImage();
      await client.create(Resources.zones, { metadata: { name: ZONE }, spec: {} });
      await client.create(Resources.serviceOfferings, {
        metadata: { name: `cs-small-${suffix}` },
        spec: { cpu: 1, memory: "128Mi" },
      });
      await client.create(Resources.templates, {
        metadata: { name: `cs-tiny-${suffix}` },
        spec: { source: { url }, checksum },
      });
      const cloud = await startCloudStackCloud({
        kubeconfigPath: controlPlane.kubeconfigPath,
        client,
        prefix: `cs-${suffix}`,
        zone: ZONE,
        hosts: [`cs-h1-${suffix}`, `cs-h2-${suffix}`],
        keysNamespace,
        workDir,
      });
      processes.push(...cloud.processes);
      endpoint = cloud.endpoint;
    });

    afterEach((context) => {
      if (context.task.result?.state !== "fail") return;
      for (const p of processes) process.stderr.write(`--- ${p.identity}:\n${p.logs().slice(-3000)}\n`);
    });

    afterAll(async () => {
      for (const p of processes) await p.stop("SIGKILL");
      await client?.close();
      await rm(workDir, { recursive: true, force: true });
    });

    it("refuses tampered, unknown-key and expired requests with 401, and bad input with the right envelope", async () => {
      const ok = await raw(alice, { command: "listZones" });
      expect(ok.status).toBe(200);
      const tampered = await raw(alice, { command: "listZones", name: ZONE }, (p) => {
        p.name = "other";
      });
      expect(tampered).toEqual({
        status: 401,
        body: {
          listzonesresponse: {
            uuidList: [],
            errorcode: 401,
            cserrorcode: 9999,
            errortext: "unable to verify user credentials and/or request signature",
          },
        },
      });
      expect((await raw({ ...alice, apiKey: "nobody" }, { command: "listZones" })).status).toBe(401);
      const expired = await raw(alice, {
        command: "listZones",
        signatureVersion: "3",
        expires: "2020-01-01T00:00:00+0000",
      });
      expect(expired.status).toBe(401);
      const future = await raw(alice, {
        command: "listZones",
        signatureVersion: "3",
        expires: new Date(Date.now() + 600_000).toISOString().replace(/\.\d+Z$/, "+0000"),
      });
      expect(future.status).toBe(200);

      const unknown = await raw(alice, { command: "launchRockets" });
      expect(unknown.status).toBe(432);
      expect(unknown.body.errorresponse?.errorcode).toBe(432);
      const missing = await raw(alice, { command: "deployVirtualMachine" });
      expect(missing.status).toBe(431);
      expect(missing.body.deployvirtualmachineresponse?.errortext).toBe(
        "Unable to execute API command deployvirtualmachine due to missing parameter serviceofferingid",
      );
      const gone = await raw(alice, {
        command: "stopVirtualMachine",
        id: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
      });
      expect(gone.status).toBe(431);
      expect(gone.body.stopvirtualmachineresponse?.errortext).toMatch(
        /^Invalid parameter id value=7c9e6679-7425-40de-944b-e07fc1f90ae7 due to incorrect long value format, or entity does not exist/,
      );
      const xml = await fetch(
        `${endpoint}?${new URLSearchParams({ command: "listZones", apiKey: alice.apiKey, signature: sign(canonicalString({ command: "listZones", apiKey: alice.apiKey }), alice.secretKey) })}`,
      );
      expect(xml.headers.get("content-type")).toMatch(/^text\/xml/);
      expect(await xml.text()).toContain(`<name>${ZONE}</name>`);
    });

    it("runs a VM's life through cs: catalog, network, deploy, list, stop, start, destroy", async () => {
      const zones = (await cs(alice, "listZones", { name: ZONE })).json.zone as Record<string, unknown>[];
      expect(zones).toHaveLength(1);
      expect(zones[0]).toMatchObject({ name: ZONE, networktype: "Advanced" });
      const zoneId = zones[0]?.id as string;
      const offerings = (await cs(alice, "listServiceOfferings", { name: `cs-small-${suffix}` })).json;
      expect(offerings).toMatchObject({ count: 1, serviceoffering: [{ cpunumber: 1, memory: 128 }] });
      const templates = (await cs(alice, "listTemplates", { templatefilter: "executable", zoneid: zoneId }))
        .json;
      const template = (templates.template as Record<string, unknown>[]).find(
        (t) => t.name === `cs-tiny-${suffix}`,
      );
      expect(template).toMatchObject({ isready: true, hypervisor: "KVM", format: "QCOW2" });

      const network = await cs(alice, "createNetwork", {
        name: "web",
        displaytext: "web tier",
        networkofferingid: "5ce0b2e4-6d1c-4f2b-9a57-2a0f3d8b1c01",
        zoneid: zoneId,
        gateway: "10.60.0.1",
        netmask: "255.255.255.0",
      });
      expect(network.ok).toBe(true);
      expect(network.json.network).toMatchObject({ name: "web", cidr: "10.60.0.0/24", gateway: "10.60.0.1" });

      const deployed = await cs(alice, "deployVirtualMachine", {
        serviceofferingid: (offerings.serviceoffering as Record<string, unknown>[])[0]?.id as string,
        templateid: template?.id as string,
        zoneid: zoneId,
        name: "web-1",
        networkids: (network.json.network as Record<string, unknown>).id as string,
      });
      expect(deployed.stderr).toBe("");
      const vm = (deployed.json as { virtualmachine: Record<string, unknown> }).virtualmachine;
      expect(vm).toMatchObject({ name: "web-1", state: "Running", cpunumber: 1, memory: 128 });
      expect(vm.nic).toEqual([
        expect.objectContaining({ ipaddress: "10.60.0.2", isdefault: true, networkname: "web" }),
      ]);

      const listed = (await cs(alice, "listVirtualMachines")).json;
      expect(listed).toMatchObject({ count: 1, virtualmachine: [{ id: vm.id, state: "Running" }] });
      const roots = (await cs(alice, "listVolumes", { type: "ROOT", virtualmachineid: vm.id as string }))
        .json;
      expect(roots).toMatchObject({
        count: 1,
        volume: [{ type: "ROOT", name: "web-1-root", virtualmachineid: vm.id }],
      });

      expect((await cs(alice, "stopVirtualMachine", { id: vm.id as string })).json).toMatchObject({
        virtualmachine: { id: vm.id, state: "Stopped" },
      });
      expect((await cs(alice, "startVirtualMachine", { id: vm.id as string })).json).toMatchObject({
        virtualmachine: { id: vm.id, state: "Running" },
      });

      // Another account sees none of it, and cannot touch it: its id is unknown there (431).
      expect((await cs(bob, "listVirtualMachines", { listall: "true" })).json).toEqual({});
      const denied = await raw(bob, { command: "stopVirtualMachine", id: vm.id as string });
      expect(denied.status).toBe(431);

      expect(
        (await cs(alice, "destroyVirtualMachine", { id: vm.id as string, expunge: "true" })).json,
      ).toEqual({
        virtualmachine: {},
      });
      expect((await cs(alice, "listVirtualMachines", { id: vm.id as string })).json).toEqual({});
      expect(
        (
          await cs(alice, "deleteNetwork", {
            id: (network.json.network as Record<string, unknown>).id as string,
          })
        ).json,
      ).toEqual({
        success: true,
      });
    });

    it("reboots, tags, and attaches and detaches volumes through cs", async () => {
      const [zone] = (await cs(alice, "listZones", { name: ZONE })).json.zone as { id: string }[];
      const [offering] = (await cs(alice, "listServiceOfferings", { name: `cs-small-${suffix}` })).json
        .serviceoffering as { id: string }[];
      const template = (
        (await cs(alice, "listTemplates", { templatefilter: "executable" })).json.template as {
          id: string;
          name: string;
        }[]
      ).find((t) => t.name === `cs-tiny-${suffix}`);
      // Without networkids the VM gets the account's one network (libcloud's nodes below too).
      await cs(alice, "createNetwork", {
        name: "db",
        networkofferingid: "5ce0b2e4-6d1c-4f2b-9a57-2a0f3d8b1c01",
        zoneid: zone?.id as string,
      });
      const deployed = await cs(alice, "deployVirtualMachine", {
        serviceofferingid: offering?.id as string,
        templateid: template?.id as string,
        zoneid: zone?.id as string,
        name: "db-1",
      });
      const vm = (deployed.json as { virtualmachine: { id: string } }).virtualmachine;
      expect((await cs(alice, "rebootVirtualMachine", { id: vm.id })).json).toMatchObject({
        virtualmachine: { id: vm.id, state: "Running" },
      });

      const tagged = await cs(alice, "createTags", {
        resourcetype: "UserVm",
        resourceids: vm.id,
        "tags[0].key": "env",
        "tags[0].value": "prod",
      });
      expect(tagged.json).toEqual({ success: true });
      expect((await cs(alice, "listTags", { resourcetype: "UserVm" })).json).toMatchObject({
        count: 1,
        tag: [{ key: "env", value: "prod", resourceid: vm.id, resourcetype: "UserVm" }],
      });
      expect((await cs(alice, "listVirtualMachines", { id: vm.id })).json).toMatchObject({
        virtualmachine: [{ tags: [{ key: "env", value: "prod" }] }],
      });
      await cs(alice, "deleteTags", { resourcetype: "UserVm", resourceids: vm.id, "tags[0].key": "env" });
      expect((await cs(alice, "listTags", { resourcetype: "UserVm" })).json).toEqual({});

      // Volumes attach to a stopped VM (the host redefines it) and show up once it runs.
      await cs(alice, "stopVirtualMachine", { id: vm.id });
      const created = (
        await cs(alice, "createVolume", { name: "data-1", zoneid: zone?.id as string, size: "2" })
      ).json as {
        volume: { id: string; name: string; size: number };
      };
      expect(created.volume).toMatchObject({ name: "data-1", size: 2 * 1024 ** 3 });
      const attached = (await cs(alice, "attachVolume", { id: created.volume.id, virtualmachineid: vm.id }))
        .json;
      expect(attached).toMatchObject({
        volume: { id: created.volume.id, virtualmachineid: vm.id, vmname: "db-1" },
      });
      await cs(alice, "startVirtualMachine", { id: vm.id });
      const volumes = (await cs(alice, "listVolumes", { virtualmachineid: vm.id })).json as {
        count: number;
        volume: { type: string; name: string }[];
      };
      expect(volumes.volume.map((v) => `${v.type}:${v.name}`).sort()).toEqual([
        "DATADISK:data-1",
        "ROOT:db-1-root",
      ]);
      const inUse = await raw(alice, { command: "deleteVolume", id: created.volume.id });
      expect(inUse.status).toBe(536);
      await cs(alice, "stopVirtualMachine", { id: vm.id });
      const detached = (await cs(alice, "detachVolume", { id: created.volume.id })).json as {
        volume: Record<string, unknown>;
      };
      expect(detached.volume.id).toBe(created.volume.id);
      expect(detached.volume).not.toHaveProperty("virtualmachineid");
      expect((await cs(alice, "deleteVolume", { id: created.volume.id })).json).toEqual({ success: true });
      await cs(alice, "destroyVirtualMachine", { id: vm.id, expunge: "true" });
    });

    it("serves Apache Libcloud's CloudStack driver: nodes, reboot, volumes", async () => {
      await client.create(Resources.diskOfferings, { metadata: { name: `cs-custom-${suffix}` }, spec: {} });
      const result = await runFile(PYTHON, ["test/integration/cloudstack/libcloud_lifecycle.py"], {
        env: {
          ...process.env,
          CLOUDSTACK_ENDPOINT: endpoint,
          CLOUDSTACK_KEY: alice.apiKey,
          CLOUDSTACK_SECRET: alice.secretKey,
          ZONE,
          OFFERING: `cs-small-${suffix}`,
          TEMPLATE: `cs-tiny-${suffix}`,
        },
        timeout: 120_000,
      }).catch((error: { stdout?: string; stderr?: string }) => {
        throw new Error(`libcloud failed:\n${error.stdout}\n${error.stderr}`);
      });
      const steps = Object.fromEntries(
        result.stdout
          .trim()
          .split("\n")
          .map((line) => JSON.parse(line) as { step: string })
          .map((s) => [s.step, s]),
      );
      expect(steps.catalog).toMatchObject({ location: ZONE, ram: 128, image: `cs-tiny-${suffix}` });
      // Libcloud deploys with startvm=false: the node exists, stopped.
      expect(steps.create_node).toMatchObject({ state: "stopped" });
      expect(steps.ex_start).toMatchObject({ state: "running", listed: 1 });
      expect(steps.reboot_node).toMatchObject({ ok: true });
      expect(steps.create_volume).toMatchObject({ size: 1 }); // GB, as Libcloud reports it
      expect(steps.attach_volume).toMatchObject({ ok: true });
      expect(steps.list_volumes).toMatchObject({ attached: 1 });
      expect(steps.detach_volume).toMatchObject({ ok: true });
      expect(steps.destroy_volume).toMatchObject({ ok: true });
      expect(steps.destroy_node).toMatchObject({ ok: true });
      expect(steps.after).toMatchObject({ nodes: 0 });
    });

    it("answers every malformed request with the right envelope and code", async () => {
      const first = async (params: Record<string, string>, list: string, item: string, name: string) => {
        const body = (await raw(alice, params)).body[list] as Record<string, { id: string; name: string }[]>;
        return (body[item] ?? []).find((entry) => entry.name === name);
      };
      const zone = await first({ command: "listZones" }, "listzonesresponse", "zone", ZONE);
      const offering = await first(
        { command: "listServiceOfferings" },
        "listserviceofferingsresponse",
        "serviceoffering",
        `cs-small-${suffix}`,
      );
      const template = await first(
        { command: "listTemplates", templatefilter: "all" },
        "listtemplatesresponse",
        "template",
        `cs-tiny-${suffix}`,
      );
      const deploy = {
        command: "deployVirtualMachine",
        serviceofferingid: offering?.id ?? "",
        templateid: template?.id ?? "",
        zoneid: zone?.id ?? "",
      };
      const cases: [string, Record<string, string>, number, RegExp][] = [
        ["no command", {}, 432, /no command sent/],
        ["unknown command", { command: "launchRockets" }, 432, /does not exist/],
        ["missing parameter", { command: "listTemplates" }, 431, /missing parameter templatefilter/],
        [
          "non-UUID id",
          { command: "startVirtualMachine", id: "web-1" },
          431,
          /^Invalid parameter id value=web-1/,
        ],
        [
          "unknown UUID",
          { command: "destroyVirtualMachine", id: "00000000-0000-4000-8000-000000000000" },
          431,
          /entity does not exist/,
        ],
        [
          "non-base64 userdata",
          { ...deploy, name: "bad-1", userdata: "not base64!" },
          431,
          /userdata must be base64/,
        ],
        [
          "oversized userdata",
          { ...deploy, name: "bad-2", userdata: "A".repeat(43_696) },
          431,
          /at most 32 KiB/,
        ],
        ["bad VM name", { ...deploy, name: "Not_A_Host" }, 431, /a VM name is a host name/],
        [
          "bad map syntax",
          { command: "createTags", resourcetype: "UserVm", resourceids: "x", "tags[x].key": "a" },
          430,
          /tags\[0\]\.field=value/,
        ],
        [
          "non-numeric page",
          { command: "listZones", page: "two" },
          431,
          /invalid value two for parameter page/,
        ],
        ["zero pagesize", { command: "listZones", pagesize: "0" }, 431, /must be positive/],
        ["unknown resource type", { command: "listTags", resourcetype: "Spaceship" }, 200, /./],
      ];
      for (const [name, params, code, text] of cases) {
        const { status, body } = await raw(alice, params);
        expect(status, name).toBe(code);
        const [envelope] = Object.values(body);
        if (code !== 200) {
          expect(envelope?.errorcode, name).toBe(code);
          expect(String(envelope?.errortext), name).toMatch(text);
        }
      }
      // A name taken in the account is a parameter error, not a conflict or a crash.
      const network = {
        command: "createNetwork",
        name: "dup-net",
        networkofferingid: "x",
        zoneid: zone?.id ?? "",
      };
      expect((await raw(alice, network)).status).toBe(200);
      const again = await raw(alice, network);
      expect(again.status).toBe(431);
      expect(String(again.body.createnetworkresponse?.errortext)).toMatch(
        /networks.stratus.io "dup-net" already exists/,
      );
      await client.delete(Resources.networks, "dup-net", alice.namespace);
      // The same parameter twice with two values is refused: which one was signed, which one is read?
      const signed = { apiKey: alice.apiKey, command: "listZones", name: ZONE, response: "json" };
      const query = `${new URLSearchParams({ ...signed, signature: sign(canonicalString(signed), alice.secretKey) })}&name=other`;
      const duplicated = await fetch(`${endpoint}?${query}`);
      expect(duplicated.status).toBe(430);
    });

    it("stays up through 5,000 random requests, answering each with a valid envelope", async () => {
      let seed = 42;
      const random = () => {
        seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
        return seed / 2 ** 31;
      };
      const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
      const implemented = (await raw(alice, { command: "listApis" })).body.listapisresponse?.api as {
        name: string;
        params: { name: string }[];
      }[];
      const junk = [
        "",
        " ",
        "%",
        "'; DROP TABLE vm;--",
        "é☃",
        "-1",
        "0",
        "true",
        "null",
        "a".repeat(300),
        "[]",
        "{}",
        "../../etc/passwd",
      ];
      const values = () => pick([...junk, crypto.randomUUID(), String(Math.floor(random() * 1e6))]);
      const statuses = new Map<number, number>();
      for (let batch = 0; batch < 250; batch++) {
        await Promise.all(
          Array.from({ length: 20 }, async () => {
            const api = pick(implemented);
            const params: Record<string, string> = {
              command: random() < 0.9 ? api.name : pick(["", "x", "listZones ", "LISTZONES"]),
            };
            for (const param of api.params) if (random() < 0.5) params[param.name] = values();
            if (random() < 0.2)
              params[
                `${pick(["tags", "details", "x"])}[${pick(["0", "a", ""])}]${pick([".key", "", ".k.v"])}`
              ] = values();
            const { status, body } = await raw(
              alice,
              params,
              random() < 0.1
                ? (p) => {
                    p.junk = "1"; // signed without it: a tampered request
                  }
                : undefined,
            );
            statuses.set(status, (statuses.get(status) ?? 0) + 1);
            const keys = Object.keys(body);
            expect(keys).toHaveLength(1);
            expect(keys[0]).toMatch(/response$/);
            if (status !== 200)
              expect(body[keys[0] as string]).toMatchObject({
                errorcode: status,
                cserrorcode: expect.any(Number),
                errortext: expect.any(String),
              });
          }),
        );
      }
      console.log(`5,000 random requests: ${JSON.stringify(Object.fromEntries(statuses))}`);
      expect([...statuses.values()].reduce((a, b) => a + b, 0)).toBe(5000);
      expect(statuses.get(530) ?? 0).toBe(0); // no internal errors
      expect((await raw(alice, { command: "listZones" })).status).toBe(200);
    });

    it("logs in with a username and password, serves the session, and logs out", async () => {
      const form = (params: Record<string, string>, cookie?: string) =>
        fetch(endpoint, {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded", ...(cookie ? { cookie } : {}) },
          body: new URLSearchParams({ response: "json", ...params }),
        });
      const refused = await form({ command: "login", username: alice.user, password: "wrong", domain: "/" });
      expect(refused.status).toBe(401);
      const login = await form({
        command: "login",
        username: alice.user,
        password: `pw-${alice.secretKey}`,
        domain: "/",
      });
      expect(login.status).toBe(200);
      const body = (await login.json()) as {
        loginresponse: { sessionkey: string; account: string; timeout: number };
      };
      expect(body.loginresponse).toMatchObject({ account: alice.namespace, timeout: 1800 });
      const cookies = login.headers.getSetCookie();
      expect(cookies.some((c) => c.startsWith(`sessionkey=${body.loginresponse.sessionkey};`))).toBe(true);
      const cookie = cookies.map((c) => c.split(";")[0]).join("; ");
      // CloudMonkey sends the key as a parameter and the cookies back.
      const zones = await form({ command: "listZones", sessionkey: body.loginresponse.sessionkey }, cookie);
      expect(zones.status).toBe(200);
      expect(
        ((await zones.json()) as { listzonesresponse: { count: number } }).listzonesresponse.count,
      ).toBeGreaterThan(0);
      const forged = await form({
        command: "listZones",
        sessionkey: `${body.loginresponse.sessionkey.slice(0, -2)}xx`,
      });
      expect(forged.status).toBe(401);
      const logout = await form({ command: "logout", sessionkey: body.loginresponse.sessionkey }, cookie);
      expect(await logout.json()).toEqual({ logoutresponse: { description: "success" } });
      expect(logout.headers.getSetCookie().some((c) => c.startsWith("sessionkey=;"))).toBe(true);
    });

    it("answers queryAsyncJobResult from any replica", async () => {
      const controlPlane = await sharedControlPlane();
      const second = await startApiServer({
        kubeconfigPath: controlPlane.kubeconfigPath,
        client,
        identity: `cs-api-2-${suffix}`,
        keysNamespace,
      });
      processes.push(second.process);
      const [zone] = ((await raw(alice, { command: "listZones", name: ZONE })).body.listzonesresponse?.zone ??
        []) as {
        id: string;
      }[];
      const created = await raw(alice, {
        command: "createVolume",
        name: "replica-vol",
        zoneid: zone?.id ?? "",
        size: "1",
      });
      const { jobid } = created.body.createvolumeresponse as { jobid: string };
      const viaSecond = async () => {
        const params = { apiKey: alice.apiKey, command: "queryAsyncJobResult", jobid, response: "json" };
        const query = new URLSearchParams({
          ...params,
          signature: sign(canonicalString(params), alice.secretKey),
        });
        return (await (await fetch(`${second.endpoint}?${query}`)).json()) as {
          queryasyncjobresultresponse: {
            jobstatus: number;
            jobresultcode: number;
            jobresult?: { volume?: { name: string } };
          };
        };
      };
      const answer = await waitFor("the job to be finished, seen from the other replica", async () => {
        const result = (await viaSecond()).queryasyncjobresultresponse;
        return result.jobstatus === 1 ? result : undefined;
      });
      expect(answer).toMatchObject({ jobresultcode: 0, jobresult: { volume: { name: "replica-vol" } } });
    });

    it("serves listApis with CloudStack's async flags and parameters", async () => {
      const apis = (await raw(alice, { command: "listApis", listall: "true" })).body.listapisresponse as {
        count: number;
        api: { name: string; isasync: boolean; params: { name: string; required: boolean }[] }[];
      };
      const deploy = apis.api.find((a) => a.name === "deployVirtualMachine");
      expect(deploy?.isasync).toBe(true);
      expect(deploy?.params).toContainEqual(expect.objectContaining({ name: "zoneid", required: true }));
      expect(apis.api.find((a) => a.name === "listZones")?.isasync).toBe(false);
      expect(apis.count).toBe(apis.api.length);
    });
  },
);

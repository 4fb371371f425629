// The CloudStack API's authentication under attack, against real API component processes (three
// replicas sharing sessions through the cluster): signed URLs replayed with folded or colliding
// parameters, sessions by cookie alone, login by GET, password guessing, use after logout, empty
// keys, and listall across accounts with the reviews it costs.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CONFIG_MAP, REVOKED_SESSIONS_LABEL } from "../../apiserver/session-revocations.ts";
import { canonicalString, sign } from "../../apiserver/signature.ts";
import { Resources } from "../../crds/index.ts";
import { KubeClient, type KubeObject } from "../../runtime/client.ts";
import { type Account, makeAccount, RBAC } from "./cloudstack-accounts.ts";
import { type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const UNAUTHORIZED = "unable to verify user credentials and/or request signature";

type Body = Record<string, Record<string, unknown>>;

describe("the CloudStack API's authentication, attacked", () => {
  let client: KubeClient;
  let keysNamespace: string;
  let alice: Account;
  let admin: Account;
  const replicas: { process: StratusProcess; endpoint: string }[] = [];
  const others: string[] = [];

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    keysNamespace = await useNamespace(controlPlane.kubeConfig, "auth-keys");
    const reader = `auth-catalog-${suffix}`;
    const vmReader = `auth-vm-reader-${suffix}`;
    for (const [name, resources] of [
      [reader, ["zones", "serviceofferings", "diskofferings", "templates"]],
      [vmReader, ["virtualmachines"]],
    ] as const)
      await client.apply(
        RBAC("v1", "clusterroles"),
        {
          metadata: { name },
          rules: [{ apiGroups: ["stratus.io"], resources, verbs: ["get", "list", "watch"] }],
        },
        { fieldManager: "cs-test" },
      );
    const account = (name: string, clusterRoles: string[]) =>
      makeAccount(client, { keysNamespace, name, suffix, clusterRoles });
    alice = await account("auth-alice", [reader]);
    admin = await account("auth-admin", [reader, vmReader]);
    // Other accounts' VMs, for listall: RBAC alone says who sees them.
    for (let i = 0; i < 12; i++) {
      const namespace = await useNamespace(controlPlane.kubeConfig, "auth-other");
      await client.create(Resources.virtualMachines, {
        metadata: { name: "secret-vm", namespace },
        spec: { zone: "z", serviceOffering: "o", template: "t" },
      } as KubeObject);
      others.push(namespace);
    }
    await client.create(Resources.virtualMachines, {
      metadata: { name: "alice-vm", namespace: alice.namespace },
      spec: { zone: "z", serviceOffering: "o", template: "t" },
    } as KubeObject);
    for (let i = 0; i < 3; i++)
      replicas.push(
        await startApiServer({
          kubeconfigPath: controlPlane.kubeconfigPath,
          client,
          identity: `auth-api-${i}-${suffix}`,
          keysNamespace,
        }),
      );
  });

  afterEach((context) => {
    if (context.task.result?.state !== "fail") return;
    for (const { process: p } of replicas)
      process.stderr.write(`--- ${p.identity}:\n${p.logs().slice(-3000)}\n`);
  });

  afterAll(async () => {
    for (const { process: p } of replicas) await p.stop("SIGKILL");
    await client?.close();
  });

  const endpoint = (replica = 0) => (replicas[replica] as { endpoint: string }).endpoint;
  const get = async (query: string, replica = 0) => {
    const response = await fetch(`${endpoint(replica)}?${query}`);
    const text = await response.text();
    return {
      status: response.status,
      body: (text.startsWith("{") ? JSON.parse(text) : { xml: text }) as Body,
    };
  };
  const post = async (
    params: Record<string, string>,
    options: { cookie?: string; query?: string; headers?: Record<string, string>; replica?: number } = {},
  ) => {
    const response = await fetch(`${endpoint(options.replica)}${options.query ? `?${options.query}` : ""}`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        ...(options.cookie !== undefined ? { cookie: options.cookie } : {}),
        ...options.headers,
      },
      body: new URLSearchParams({ response: "json", ...params }),
    });
    return {
      status: response.status,
      body: (await response.json()) as Body,
      cookies: response.headers.getSetCookie(),
    };
  };
  const signedQuery = (account: Account, params: Record<string, string>) => {
    const all: Record<string, string> = { apiKey: account.apiKey, response: "json", ...params };
    return { all, signature: sign(canonicalString(all), account.secretKey) };
  };
  const login = async (
    account: Account,
    options: { replica?: number; headers?: Record<string, string> } = {},
  ) => {
    const answer = await post(
      { command: "login", username: account.user, password: `pw-${account.secretKey}`, domain: "/" },
      options,
    );
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    const key = (answer.body.loginresponse as { sessionkey: string }).sessionkey;
    return { key, cookie: answer.cookies.map((c) => c.split(";")[0]).join("; "), cookies: answer.cookies };
  };

  it("never lets an expired signed URL be replayed, whatever the parameters are folded or doubled into", async () => {
    const expired = { command: "listZones", signatureVersion: "3", expires: "2020-01-01T00:00:00+0000" };
    const { all, signature } = signedQuery(alice, expired);
    expect((await get(`${new URLSearchParams({ ...all, signature })}`)).status).toBe(401);
    // `response` and `signatureVersion` folded into one name: no parameter is signatureVersion now.
    const { response: _response, signatureVersion: _version, ...rest } = all;
    const folded = await get(
      `${new URLSearchParams({ ...rest, "response=json&signatureVersion": "3", signature })}`,
    );
    expect(folded.status).toBe(401);
    expect(String(folded.body.xml)).toContain(`<errortext>${UNAUTHORIZED}</errortext>`);
    // A second spelling of signatureVersion, or a second value, in the query or in the form.
    const query = `${new URLSearchParams({ ...all, signature })}`;
    for (const extra of [
      "signatureversion=1",
      "SIGNATUREVERSION=3",
      "signatureVersion=1",
      "expires=2099-01-01T00:00:00Z",
    ]) {
      const doubled = await get(`${query}&${extra}`);
      expect(doubled.status, extra).toBe(430);
      expect(String(Object.values(doubled.body)[0]?.errortext), extra).toMatch(/sent more than once/);
    }
    const inForm = await post({ signatureVersion: "1" }, { query });
    expect(inForm.status).toBe(430);
    // The same URL signed to expire later works, so the refusals above are about the tricks.
    const fresh = signedQuery(alice, { ...expired, expires: new Date(Date.now() + 600_000).toISOString() });
    expect((await get(`${new URLSearchParams({ ...fresh.all, signature: fresh.signature })}`)).status).toBe(
      200,
    );
  });

  it("refuses oversized requests before any signature work", async () => {
    const many = Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`p${i}`, "1"]));
    const { all, signature } = signedQuery(alice, { command: "listZones", ...many });
    expect((await post({ ...all, signature })).status).toBe(430);
    const large = await post({
      command: "listZones",
      apiKey: alice.apiKey,
      signature: "x",
      junk: "a".repeat(1_100_000),
    });
    expect(large.status).toBe(430);
    expect(String(Object.values(large.body)[0]?.errortext)).toMatch(/larger than 1 MiB/);
    // A bad signature over a 1 MiB request is refused like any other.
    const bad = await post({
      command: "listZones",
      apiKey: alice.apiKey,
      signature: sign("x", "y"),
      junk: "~[*]".repeat(100_000),
    });
    expect(bad.status).toBe(401);
  });

  it("logs in by form POST only, never with the password in a URL", async () => {
    const credentials = {
      command: "login",
      username: alice.user,
      password: `pw-${alice.secretKey}`,
      domain: "/",
    };
    const byGet = await get(`${new URLSearchParams({ ...credentials, response: "json" })}`);
    expect(byGet.status).toBe(405);
    expect(byGet.body.loginresponse?.errortext).toBe("Please use HTTP POST to authenticate using this API");
    const passwordInUrl = await post(
      { command: "login", username: alice.user },
      { query: `password=${encodeURIComponent(credentials.password)}` },
    );
    expect(passwordInUrl.status).toBe(405);
    expect(passwordInUrl.cookies).toEqual([]);
  });

  it("wants the session key as parameter and cookie together, and sets cookies scripts and other sites cannot use", async () => {
    const { key, cookie, cookies } = await login(alice);
    for (const set of cookies) expect(set).toMatch(/; HttpOnly; SameSite=Strict/);
    for (const set of cookies) expect(set).not.toMatch(/Secure/);
    // Another site's page makes the browser send the cookie, but cannot know the key (CSRF).
    expect((await post({ command: "listZones" }, { cookie })).status).toBe(401);
    // A key lifted from a URL or a log, without the cookie.
    expect((await post({ command: "listZones", sessionkey: key })).status).toBe(401);
    // A cookie the attacker planted, with the attacker's own key as the parameter: another session.
    expect((await post({ command: "listZones", sessionkey: `${key}x` }, { cookie })).status).toBe(401);
    expect((await post({ command: "listZones", sessionkey: key }, { cookie })).status).toBe(200);
    const overTls = await login(alice, { headers: { "x-forwarded-proto": "https" } });
    for (const set of overTls.cookies) expect(set).toMatch(/; Secure/);
  });

  it("refuses empty session keys", async () => {
    const { cookie } = await login(alice);
    expect((await post({ command: "listZones", sessionkey: "" }, { cookie: "sessionkey=" })).status).toBe(
      401,
    );
    expect((await post({ command: "listZones", sessionkey: "" }, { cookie })).status).toBe(401);
    expect((await post({ command: "listZones", sessionkey: "." }, { cookie: "sessionkey=." })).status).toBe(
      401,
    );
  });

  it("revokes a session at logout, with its cookie too, on every replica", async () => {
    const { key, cookie } = await login(alice);
    const use = (replica: number) => post({ command: "listZones", sessionkey: key }, { cookie, replica });
    expect((await use(1)).status).toBe(200); // any replica reads any session
    const logout = await post({ command: "logout", sessionkey: key }, { cookie });
    expect(logout.body).toEqual({ logoutresponse: { description: "success" } });
    expect(logout.cookies).toContain("sessionkey=; Path=/client; HttpOnly; SameSite=Strict; Max-Age=0");
    expect((await use(0)).status).toBe(401);
    await waitFor(
      "the other replica to refuse the revoked session",
      async () => (await use(1)).status === 401,
      {
        timeoutMs: 10_000,
      },
    );
    // A session of the same user that was not logged out still works.
    const other = await login(alice);
    expect(
      (await post({ command: "listZones", sessionkey: other.key }, { cookie: other.cookie })).status,
    ).toBe(200);
    // The shared record names the revoked session by a hash: it holds no usable key.
    const records = await client.list<KubeObject & { data?: Record<string, string> }>(CONFIG_MAP, {
      namespace: keysNamespace,
      labelSelector: REVOKED_SESSIONS_LABEL,
    });
    expect(records.items).toHaveLength(1);
    expect(JSON.stringify(records.items[0]?.data)).not.toContain(key.split(".")[1]);
  });

  it("throttles failed logins per user and per address with CloudStack's API limit error", async () => {
    const throttled = 2; // its own replica: the counts are each replica's
    const attempt = (username: string, password: string) =>
      post({ command: "login", username, password, domain: "/" }, { replica: throttled });
    for (let i = 0; i < 5; i++) expect((await attempt(alice.user, `wrong-${i}`)).status).toBe(401);
    // Even the right password now waits: guesses cannot go on at speed.
    const refused = await attempt(alice.user, `pw-${alice.secretKey}`);
    expect(refused.status).toBe(429);
    expect(refused.body.loginresponse).toMatchObject({ errorcode: 429, cserrorcode: 4545 });
    expect(String(refused.body.loginresponse?.errortext)).toMatch(
      new RegExp(`^Too many failed login attempts for user ${alice.user}, please retry after \\d+ s$`),
    );
    // One address guessing many users: after 20 failures in all, nobody logs in from it.
    for (let i = 0; i < 15; i++) expect((await attempt(`nobody-${i}`, "guess")).status).toBe(401);
    const fromAddress = await attempt(admin.user, `pw-${admin.secretKey}`);
    expect(fromAddress.status).toBe(429);
    expect(String(fromAddress.body.loginresponse?.errortext)).toMatch(
      /^Too many failed login attempts from /,
    );
    // Other replicas' counts are their own.
    await login(admin, { replica: 0 });
  });

  it("lists across accounts only what RBAC grants, with one review for a cluster-wide role", async () => {
    const names = async (account: Account) => {
      const { all, signature } = signedQuery(account, { command: "listVirtualMachines", listall: "true" });
      const { status, body } = await get(`${new URLSearchParams({ ...all, signature })}`, 1);
      expect(status).toBe(200);
      return ((body.listvirtualmachinesresponse?.virtualmachine ?? []) as { name: string; account: string }[])
        .map((vm) => `${vm.account}/${vm.name}`)
        .sort();
    };
    const reviews = async () => {
      const metrics = (await (replicas[1] as { process: StratusProcess }).process.get("/metrics")).body;
      return [...metrics.matchAll(/^stratus_api_requests_total\{([^}]*)\} (\d+)/gm)]
        .filter(([, labels]) => labels?.includes('resource="subjectaccessreviews"'))
        .reduce((sum, [, , value]) => sum + Number(value), 0);
    };
    expect(await names(alice)).toEqual([`${alice.namespace}/alice-vm`]);
    const before = await reviews();
    const everything = await names(admin);
    for (const namespace of [...others, alice.namespace])
      expect(
        everything.some((n) => n.startsWith(`${namespace}/`)),
        namespace,
      ).toBe(true);
    // Before: one review per account (13 here); now one for the whole cluster.
    expect((await reviews()) - before).toBeLessThanOrEqual(2);
  });

  it("stops rather than sign sessions with an empty key anyone could forge with", async () => {
    const controlPlane = await sharedControlPlane();
    const emptyKeys = await useNamespace(controlPlane.kubeConfig, "auth-empty");
    await client.create({ group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true }, {
      metadata: { name: "stratus-apiserver-sessions", namespace: emptyKeys },
      data: { key: "" },
    } as KubeObject);
    const child = spawn(
      process.execPath,
      [
        "apiserver/main.ts",
        `--kubeconfig=${controlPlane.kubeconfigPath}`,
        "--listen=127.0.0.1:0",
        "--health-address=127.0.0.1:0",
        `--keys-namespace=${emptyKeys}`,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code).toBe(2);
    expect(stderr).toMatch(/has 0 bytes, fewer than 32: sessions could be forged/);
  });
});

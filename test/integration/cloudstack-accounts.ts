// CloudStack accounts for the API tests: a namespace with the user's RBAC, an API key Secret, and
// the two ways tests call the API: the real Python `cs` client and a request signed by hand.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import { API_KEY_LABEL, SECRET } from "../../apiserver/api.ts";
import { canonicalString, sign } from "../../apiserver/signature.ts";
import type { KubeClient, KubeObject, ResourceType } from "../../runtime/client.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const runFile = promisify(execFile);
const PYTHON = "/usr/bin/python3";
export const hasCs = existsSync("/usr/lib/python3/dist-packages/cs/__init__.py");

export const RBAC = (version: string, plural: string): ResourceType => ({
  group: "rbac.authorization.k8s.io",
  version,
  plural,
  kind:
    plural === "clusterroles"
      ? "ClusterRole"
      : plural === "clusterrolebindings"
        ? "ClusterRoleBinding"
        : plural === "roles"
          ? "Role"
          : "RoleBinding",
  namespaced: plural === "roles" || plural === "rolebindings",
});

export interface Account {
  user: string;
  namespace: string;
  apiKey: string;
  secretKey: string;
}

/** A ClusterRole that reads the catalog (zones, offerings, templates), for the tests' accounts. */
export async function catalogReaderRole(client: KubeClient, name: string): Promise<string> {
  await client.apply(
    RBAC("v1", "clusterroles"),
    {
      metadata: { name },
      rules: [
        {
          apiGroups: ["stratus.io"],
          resources: ["zones", "serviceofferings", "diskofferings", "templates"],
          verbs: ["get", "list", "watch"],
        },
      ],
    },
    { fieldManager: "cs-test" },
  );
  return name;
}

/** Runs `cs <command> k=v...` as an account; the JSON it prints, and whether it failed. */
export async function cs(
  endpoint: string,
  account: Account,
  command: string,
  args: Record<string, string> = {},
  options: { post?: boolean } = {},
) {
  const result = await runFile(
    PYTHON,
    [
      "-m",
      "cs",
      ...(options.post ? ["--post"] : []),
      command,
      ...Object.entries(args).map(([k, v]) => `${k}=${v}`),
    ],
    {
      maxBuffer: 16 * 1024 * 1024,
      env: {
        ...process.env,
        CLOUDSTACK_ENDPOINT: endpoint,
        CLOUDSTACK_KEY: account.apiKey,
        CLOUDSTACK_SECRET: account.secretKey,
        CLOUDSTACK_TIMEOUT: "60",
      },
    },
  ).then(
    (r) => ({ ok: true, stdout: r.stdout, stderr: r.stderr }),
    (e: { stdout?: string; stderr?: string }) => ({
      ok: false,
      stdout: e.stdout ?? "",
      stderr: e.stderr ?? "",
    }),
  );
  const json = result.stdout.trim() ? (JSON.parse(result.stdout) as Record<string, unknown>) : {};
  return { ...result, json };
}

/** A request signed by hand, for the cases no well-behaved client sends. */
export async function signedRequest(
  endpoint: string,
  account: Account,
  params: Record<string, string>,
  tamper?: (p: Record<string, string>) => void,
) {
  const all = { apiKey: account.apiKey, response: "json", ...params };
  const signature = sign(canonicalString(all), account.secretKey);
  tamper?.(all);
  const query = new URLSearchParams({ ...all, signature });
  const response = await fetch(`${endpoint}?${query}`);
  return {
    status: response.status,
    body: (await response.json()) as Record<string, Record<string, unknown>>,
  };
}

/**
 * An async command submitted by hand and its job polled to the end: the submission's HTTP status
 * and body, and the finished job's body (undefined when the submission was refused).
 */
export async function jobOf(endpoint: string, account: Account, params: Record<string, string>) {
  const submitted = await signedRequest(endpoint, account, params);
  const body = submitted.body[`${(params.command as string).toLowerCase()}response`] as Record<
    string,
    unknown
  >;
  if (submitted.status !== 200) return { status: submitted.status, body, job: undefined };
  const job = await jobEnd(endpoint, account, body.jobid as string, params.command as string);
  return { status: submitted.status, body, job };
}

/** queryAsyncJobResult's answer once the job has ended. */
export function jobEnd(endpoint: string, account: Account, jobid: string, command: string) {
  return waitFor(
    `job of ${command}`,
    async () => {
      const polled = await signedRequest(endpoint, account, { command: "queryAsyncJobResult", jobid });
      const answer = polled.body.queryasyncjobresultresponse as Record<string, unknown>;
      return answer.jobstatus === 0 ? undefined : answer;
    },
    { timeoutMs: 90_000, intervalMs: 500 },
  );
}

/**
 * An account `name`: its namespace with the user's Role for its own objects, the cluster roles
 * given (catalog, admin), and its API key Secret in `keysNamespace`.
 */
export async function makeAccount(
  client: KubeClient,
  options: { keysNamespace: string; name: string; suffix: string; clusterRoles: string[] },
): Promise<Account> {
  const { keysNamespace, name, suffix } = options;
  const controlPlane = await sharedControlPlane();
  const namespace = await useNamespace(controlPlane.kubeConfig, name);
  const user = `${name}-${suffix}`;
  const apply = (type: ResourceType, object: KubeObject & Record<string, unknown>) =>
    client.apply(type, object, { fieldManager: "cs-test" });
  await apply(RBAC("v1", "roles"), {
    metadata: { name: "cloudstack-user", namespace },
    rules: [
      {
        apiGroups: ["stratus.io"],
        resources: [
          "virtualmachines",
          "volumes",
          "networks",
          "ipaddresses",
          "asyncjobs",
          "affinitygroups",
          "publicipaddresses",
          "portforwardingrules",
          "firewallrules",
          "loadbalancerrules",
          "egressfirewallrules",
        ],
        verbs: ["get", "list", "watch", "create", "update", "patch", "delete"],
      },
    ],
  });
  await apply(RBAC("v1", "rolebindings"), {
    metadata: { name: "cloudstack-user", namespace },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "cloudstack-user" },
    subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: user }],
  });
  for (const role of options.clusterRoles)
    await apply(RBAC("v1", "clusterrolebindings"), {
      metadata: { name: `${role}-${user}` },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: role },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: user }],
    });
  const account = {
    user,
    namespace,
    apiKey: randomBytes(12).toString("hex"),
    secretKey: randomBytes(24).toString("base64"),
  };
  await client.create(SECRET, {
    metadata: { name: `key-${name}`, namespace: keysNamespace, labels: { [API_KEY_LABEL]: "true" } },
    stringData: {
      apiKey: account.apiKey,
      secretKey: account.secretKey,
      user,
      account: namespace,
      username: user,
      password: `pw-${account.secretKey}`,
    },
  } as KubeObject);
  return account;
}

/**
 * The manifests' own tenant role (`stratus-cloud-user`, as `stratus-cloud-user-<suffix>`) bound in
 * each account's namespace only, as an account's users get it.
 */
export async function bindCloudUserRole(
  client: KubeClient,
  suffix: string,
  accounts: Account[],
): Promise<void> {
  const manifests = parseAllDocuments(await readFile("manifests/base/rbac.yaml", "utf8")).map(
    (d) => d.toJSON() as KubeObject & { kind: string; rules: unknown[] },
  );
  const role = manifests.find((d) => d.kind === "ClusterRole" && d.metadata.name === "stratus-cloud-user");
  if (!role) throw new Error("manifests/base/rbac.yaml has no ClusterRole stratus-cloud-user");
  const name = `stratus-cloud-user-${suffix}`;
  await client.apply(
    RBAC("v1", "clusterroles"),
    { metadata: { name }, rules: role.rules },
    { fieldManager: "cs-test" },
  );
  for (const account of accounts)
    await client.apply(
      RBAC("v1", "rolebindings"),
      {
        metadata: { name: "stratus-cloud-user", namespace: account.namespace },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name },
        subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: account.user }],
      },
      { fieldManager: "cs-test" },
    );
}

/**
 * An administrator with the manifests' own `stratus-cloud-admin` role and a user with only
 * `stratus-catalog-reader`, both under names of this run's (`suffix`).
 */
export async function adminAndUser(
  client: KubeClient,
  options: { keysNamespace: string; suffix: string; prefix: string },
): Promise<{ admin: Account; user: Account }> {
  const { suffix } = options;
  const manifests = parseAllDocuments(await readFile("manifests/base/rbac.yaml", "utf8")).map(
    (d) => d.toJSON() as KubeObject & { kind: string; rules: unknown[] },
  );
  for (const name of ["stratus-cloud-admin", "stratus-catalog-reader"]) {
    const role = manifests.find((d) => d.kind === "ClusterRole" && d.metadata.name === name);
    if (!role) throw new Error(`manifests/base/rbac.yaml has no ClusterRole ${name}`);
    await client.apply(
      RBAC("v1", "clusterroles"),
      { metadata: { name: `${name}-${suffix}` }, rules: role.rules },
      { fieldManager: "cs-test" },
    );
  }
  const admin = await makeAccount(client, {
    keysNamespace: options.keysNamespace,
    name: `${options.prefix}-admin`,
    suffix,
    clusterRoles: [`stratus-catalog-reader-${suffix}`, `stratus-cloud-admin-${suffix}`],
  });
  const user = await makeAccount(client, {
    keysNamespace: options.keysNamespace,
    name: `${options.prefix}-user`,
    suffix,
    clusterRoles: [`stratus-catalog-reader-${suffix}`],
  });
  return { admin, user };
}

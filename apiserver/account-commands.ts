// CloudStack's account and user commands for administrators, over namespaces and RBAC
// (account-records.ts): createAccount, listAccounts, deleteAccount (async: its job ends when the
// namespace is gone), createUser, listUsers, deleteUser, registerUserKeys, getUserKeys. Only a
// caller RBAC lets `create` accounts.stratus.io (stratus-cloud-admin grants it) may call them;
// anyone else gets 531. getUserKeys and registerUserKeys also serve a user its own keys.
import { randomBytes } from "node:crypto";
import type { AsyncJob } from "../crds/index.ts";
import { isConflict, type KubeObject, NAMESPACE } from "../runtime/client.ts";
import type { ReviewedType } from "./access.ts";
import {
  type AccountRole,
  accountNamespace,
  accountRole,
  checkUserInput,
  type UserInput,
} from "./account-input.ts";
import { AccountRecords, ROLE_ANNOTATION, userFields } from "./account-records.ts";
import type { Call, CloudStackApi, Command, Secret } from "./api.ts";
import { ApiError, ERROR, entityNotFound, formatDate, type Json, ROOT_DOMAIN_ID } from "./envelope.ts";
import { submitJob } from "./jobs.ts";
import { page } from "./listing.ts";

/** Not a served resource: the grant RBAC is asked for before any account or user command. */
export const ACCOUNTS: ReviewedType = { group: "stratus.io", plural: "accounts" };
type NamespaceWithConditions = KubeObject & {
  status?: { conditions?: { type: string; status: string; message?: string }[] };
};

/** The job parameter deleteAccount records the account's namespace UID in. */
const DELETED_ACCOUNT = "stratus.account";

const records = (call: Call) => new AccountRecords(call.api.client, call.api.keysNamespace);

async function isAdministrator(call: Call): Promise<boolean> {
  return call.api.can(call.caller, "create", ACCOUNTS);
}

export async function requireAdministrator(call: Call): Promise<void> {
  if (!(await isAdministrator(call)))
    throw new ApiError(
      ERROR.ACCOUNT,
      `Caller is not an administrator, permission denied (${call.params.command}: account ${call.caller.account} may not create accounts)`,
    );
}

const roleOf = (namespace: KubeObject): AccountRole =>
  namespace.metadata.annotations?.[ROLE_ANNOTATION] === "Admin" ? "Admin" : "User";

const roleFields = (role: AccountRole) => ({ accounttype: role === "Admin" ? 1 : 0, roletype: role });

/** A user; `namespace` is its account's, when the cache may not hold it yet (one just made). */
function userView(
  api: CloudStackApi,
  record: Secret,
  namespace = api.accountNamespaces.get(userFields(record).account),
): Record<string, Json> {
  const fields = userFields(record);
  return {
    id: record.metadata.uid as string,
    username: fields.username,
    firstname: fields.firstname,
    lastname: fields.lastname,
    email: fields.email,
    account: fields.account,
    ...(namespace ? { accountid: namespace.metadata.uid as string, ...roleFields(roleOf(namespace)) } : {}),
    domain: "ROOT",
    domainid: ROOT_DOMAIN_ID,
    state: "enabled",
    created: formatDate(record.metadata.creationTimestamp) ?? "",
    ...(fields.apiKey ? { apikey: fields.apiKey } : {}),
  };
}

function accountView(api: CloudStackApi, namespace: KubeObject, users: Secret[]): Record<string, Json> {
  return {
    id: namespace.metadata.uid as string,
    name: namespace.metadata.name as string,
    ...roleFields(roleOf(namespace)),
    domain: "ROOT",
    domainid: ROOT_DOMAIN_ID,
    state: namespace.metadata.deletionTimestamp ? "disabled" : "enabled",
    created: formatDate(namespace.metadata.creationTimestamp) ?? "",
    user: users.map((record) => userView(api, record, namespace)),
  };
}

function userInput(call: Call): UserInput {
  // As login: a password in a URL ends up in proxy and server logs (CloudStack POSTs createUser).
  if (call.params.sentInQuery("password"))
    throw new ApiError(
      ERROR.METHOD_NOT_ALLOWED,
      `Please send the password in the POST body, never in the URL (${call.params.command})`,
    );
  return checkUserInput({
    username: call.params.required("username"),
    password: call.params.required("password"),
    email: call.params.required("email"),
    firstname: call.params.required("firstname"),
    lastname: call.params.required("lastname"),
  });
}

/** A user of this name anywhere is CloudStack's duplicate-user error. */
async function requireFreeUsername(call: Call, username: string): Promise<void> {
  if (await records(call).userRecord(username))
    throw new ApiError(ERROR.PARAM, `The user ${username} already exists in domain ROOT`);
}

async function createUserOrExplain(call: Call, account: string, role: AccountRole, input: UserInput) {
  try {
    return await records(call).createUser(account, role, input);
  } catch (error) {
    if (isConflict(error))
      throw new ApiError(ERROR.PARAM, `The user ${input.username} already exists in domain ROOT`);
    throw error;
  }
}

/** The account (namespace) of this name or id, or CloudStack's 431. */
function accountNamed(call: Call, name: string): KubeObject {
  const namespace = call.api.accountNamespaces.get(name);
  if (!namespace) throw new ApiError(ERROR.PARAM, `Unable to find account by name ${name} in domain ROOT`);
  return namespace;
}

const createAccount: Command = {
  async handler(call) {
    await requireAdministrator(call);
    const input = userInput(call);
    const account = accountNamespace(call.params.get("account") ?? input.username);
    const role = accountRole(call.params.get("accounttype"), call.params.get("roletype"));
    await requireFreeUsername(call, input.username);
    const made = records(call);
    let namespace: KubeObject;
    try {
      namespace = await made.createAccount(account, role);
    } catch (error) {
      if (isConflict(error))
        throw new ApiError(ERROR.PARAM, `The specified account: ${account} already exists`);
      throw error;
    }
    try {
      const record = await createUserOrExplain(call, account, role, input);
      return { account: accountView(call.api, namespace, [record]) };
    } catch (error) {
      // Never half an account: what was made goes again.
      await made.deleteAccount(account, namespace.metadata.uid as string);
      throw error;
    }
  },
};

/**
 * The accounts a caller may list: an administrator's every account, anyone else's only its own (as
 * CloudStack lists a user's), whether or not createAccount made it.
 */
async function visibleAccounts(call: Call): Promise<KubeObject[]> {
  if (await isAdministrator(call)) return call.api.accountNamespaces.list();
  const own =
    call.api.accountNamespaces.get(call.caller.account) ??
    (await call.api.client.get<KubeObject>(NAMESPACE, call.caller.account).catch(() => undefined));
  return own ? [own] : [];
}

/** Users' records a caller may list: an administrator's of any account, anyone else's of its own. */
async function visibleUsers(call: Call, account: string | undefined): Promise<Secret[]> {
  if (await isAdministrator(call)) return records(call).users(account);
  if (account !== undefined && account !== call.caller.account) await requireAdministrator(call);
  return records(call).users(call.caller.account);
}

const listAccounts: Command = {
  async handler(call) {
    const id = call.params.uuid("id");
    const name = call.params.get("name");
    const keyword = call.params.get("keyword")?.toLowerCase();
    const type = call.params.get("accounttype");
    const visible = await visibleAccounts(call);
    const users = await visibleUsers(
      call,
      visible.length === 1 ? (visible[0]?.metadata.name as string) : undefined,
    );
    const accounts = visible
      .filter((n) => !id || n.metadata.uid === id)
      .filter((n) => !name || n.metadata.name === name)
      .filter((n) => !keyword || (n.metadata.name as string).includes(keyword))
      .filter((n) => type === undefined || String(roleFields(roleOf(n)).accounttype) === type)
      .sort((a, b) => (a.metadata.name as string).localeCompare(b.metadata.name as string));
    return page(
      call,
      "account",
      accounts.map((n) =>
        accountView(
          call.api,
          n,
          users.filter((u) => userFields(u).account === n.metadata.name),
        ),
      ),
    );
  },
};

const deleteAccount: Command = {
  async: true,
  async handler(call) {
    await requireAdministrator(call);
    const id = call.params.requiredUuid("id");
    const [namespace] = call.api.accountNamespaces.byIndex("uid", id);
    if (!namespace) throw entityNotFound("id", id);
    const account = namespace.metadata.name as string;
    if (account === call.caller.account)
      throw new ApiError(
        ERROR.PARAM,
        `Account ${account} is the caller's own; another administrator deletes it`,
      );
    await records(call).deleteAccount(account, id);
    const job = await submitJob(
      call,
      "deleteAccount",
      { kind: "Account", metadata: { name: account, uid: id, namespace: call.caller.account } },
      { [DELETED_ACCOUNT]: id },
    );
    return { jobid: job.metadata.uid as string };
  },
  outcome(job: AsyncJob, api: CloudStackApi) {
    const uid = job.spec.parameters?.[DELETED_ACCOUNT] ?? "";
    const [namespace] = api.accountNamespaces.byIndex("uid", uid) as NamespaceWithConditions[];
    if (!namespace) return { result: { success: true } };
    // What Kubernetes' namespace controller says keeps it (content left, finalizers, discovery).
    const blocking = (namespace.status?.conditions ?? [])
      .filter((condition) => condition.status === "True")
      .map((condition) => `${condition.type}: ${condition.message ?? ""}`);
    return {
      waitingFor: `namespace ${namespace.metadata.name} to be deleted${blocking.length > 0 ? `: ${blocking.join("; ")}` : ""}`,
    };
  },
};

const createUser: Command = {
  async handler(call) {
    await requireAdministrator(call);
    const input = userInput(call);
    const namespace = accountNamed(call, call.params.required("account"));
    if (namespace.metadata.deletionTimestamp)
      throw new ApiError(ERROR.PARAM, `Account ${namespace.metadata.name} is being deleted`);
    await requireFreeUsername(call, input.username);
    const record = await createUserOrExplain(
      call,
      namespace.metadata.name as string,
      roleOf(namespace),
      input,
    );
    return { user: userView(call.api, record) };
  },
};

const listUsers: Command = {
  async handler(call) {
    const id = call.params.uuid("id");
    const username = call.params.get("username");
    const account = call.params.get("account");
    const keyword = call.params.get("keyword")?.toLowerCase();
    const users = (await visibleUsers(call, account))
      .filter((u) => !id || u.metadata.uid === id)
      .filter((u) => !username || userFields(u).username === username)
      .filter((u) => !keyword || userFields(u).username.toLowerCase().includes(keyword))
      .sort((a, b) => userFields(a).username.localeCompare(userFields(b).username));
    return page(
      call,
      "user",
      users.map((u) => userView(call.api, u)),
    );
  },
};

/** The user of `id`: an administrator's any, anyone else's only its own (another's is unknown: 431). */
async function userById(call: Call, options: { ownAllowed: boolean }): Promise<Secret> {
  const id = call.params.requiredUuid("id");
  const administrator = await isAdministrator(call);
  if (!administrator && !options.ownAllowed) await requireAdministrator(call);
  const record = (await records(call).users()).find((u) => u.metadata.uid === id);
  if (!record || (!administrator && userFields(record).user !== call.caller.user))
    throw entityNotFound("id", id);
  return record;
}

const deleteUser: Command = {
  async handler(call) {
    const record = await userById(call, { ownAllowed: false });
    if (userFields(record).user === call.caller.user)
      throw new ApiError(ERROR.PARAM, "A user cannot delete itself; another administrator deletes it");
    await records(call).deleteUser(record);
    return { success: true };
  },
};

const registerUserKeys: Command = {
  async handler(call) {
    const record = await userById(call, { ownAllowed: true });
    const apiKey = randomBytes(48).toString("base64url");
    const secretKey = randomBytes(48).toString("base64url");
    await records(call).setKeys(record, apiKey, secretKey);
    return { userkeys: { apikey: apiKey, secretkey: secretKey } };
  },
};

const getUserKeys: Command = {
  async handler(call) {
    const { apiKey, secretKey } = userFields(await userById(call, { ownAllowed: true }));
    return { userkeys: apiKey ? { apikey: apiKey, secretkey: secretKey } : {} };
  },
};

export const ACCOUNT_COMMANDS: Record<string, Command> = {
  createAccount,
  listAccounts,
  deleteAccount,
  createUser,
  listUsers,
  deleteUser,
  registerUserKeys,
  getUserKeys,
};

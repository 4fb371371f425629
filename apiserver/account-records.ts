// What a CloudStack account and its users are in Kubernetes, made and removed by the API component
// itself (account-commands.ts checks the caller is an administrator first). Every object carries
// the label stratus.io/account=<account> (a user's also stratus.io/cloudstack-user=<digest>), so
// deleteAccount and deleteUser remove exactly what was made:
// - the account: a Namespace, and the RoleBinding of stratus-apiserver-account in it;
// - a user: a record in the keys namespace (an API key Secret: identity, scrypt password hash, and
//   keys once registered), a RoleBinding of stratus-cloud-user in the namespace, ClusterRoleBindings
//   of stratus-catalog-reader (and stratus-cloud-admin in an Admin account), and its name in the
//   account's ClusterRole labelled stratus.io/tenant-identities (whom the API component may act as).
import {
  isNotFound,
  type KubeClient,
  type KubeObject,
  NAMESPACE,
  type ResourceType,
} from "../runtime/client.ts";
import type { AccountRole, UserInput } from "./account-input.ts";
import { hashPassword, kubernetesUser, usernameDigest } from "./account-input.ts";
import { API_KEY_LABEL, SECRET, type Secret } from "./authentication.ts";

export const ACCOUNT_LABEL = "stratus.io/account";
export const USER_LABEL = "stratus.io/cloudstack-user";
export const ROLE_ANNOTATION = "stratus.io/account-role";
const TENANT_IDENTITIES_LABEL = "stratus.io/tenant-identities";
const FIELD_MANAGER = "stratus-apiserver";
/** The API component's own identity, bound to stratus-apiserver-account in each account. */
const API_SERVICE_ACCOUNT = {
  kind: "ServiceAccount",
  name: "stratus-apiserver",
  namespace: "stratus-system",
};

const rbac = (plural: string, kind: string, namespaced: boolean): ResourceType => ({
  group: "rbac.authorization.k8s.io",
  version: "v1",
  plural,
  kind,
  namespaced,
});
export const ROLE_BINDINGS = rbac("rolebindings", "RoleBinding", true);
export const CLUSTER_ROLE_BINDINGS = rbac("clusterrolebindings", "ClusterRoleBinding", false);
export const CLUSTER_ROLES = rbac("clusterroles", "ClusterRole", false);

export const userRecordName = (username: string) => `cloudstack-user-${usernameDigest(username)}`;
export const tenantIdentitiesRoleName = (account: string) => `stratus-account-${account}`;

const decode = (value: string | undefined) => (value ? Buffer.from(value, "base64").toString("utf8") : "");

/** A user record's fields, decoded. */
export function userFields(record: Secret) {
  const data = record.data ?? {};
  return {
    username: decode(data.username),
    user: decode(data.user),
    account: decode(data.account),
    email: decode(data.email),
    firstname: decode(data.firstname),
    lastname: decode(data.lastname),
    apiKey: decode(data.apiKey),
    secretKey: decode(data.secretKey),
  };
}

function ignoreMissing(error: unknown): void {
  if (!isNotFound(error)) throw error;
}

function binding(
  name: string,
  namespace: string | undefined,
  role: string,
  subject: Record<string, string>,
  labels: Record<string, string>,
) {
  return {
    metadata: { name, ...(namespace ? { namespace } : {}), labels },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: role },
    subjects: [subject],
  };
}

export class AccountRecords {
  private readonly client: KubeClient;
  private readonly keysNamespace: string;

  constructor(client: KubeClient, keysNamespace: string) {
    this.client = client;
    this.keysNamespace = keysNamespace;
  }

  /** The account's namespace and the API component's rights in it; 409 when the namespace exists. */
  async createAccount(account: string, role: AccountRole): Promise<KubeObject> {
    const labels = { [ACCOUNT_LABEL]: account };
    const namespace = await this.client.create(NAMESPACE, {
      metadata: { name: account, labels, annotations: { [ROLE_ANNOTATION]: role } },
    });
    await this.client.create(
      ROLE_BINDINGS,
      binding("stratus-apiserver", account, "stratus-apiserver-account", API_SERVICE_ACCOUNT, labels),
    );
    return namespace;
  }

  /** The user's record and RBAC; 409 when a user of that name exists (in any account). */
  async createUser(account: string, role: AccountRole, input: UserInput): Promise<Secret> {
    const digest = usernameDigest(input.username);
    const labels = { [ACCOUNT_LABEL]: account, [USER_LABEL]: digest };
    const user = kubernetesUser(account, input.username);
    const record = await this.client.create<Secret>(SECRET, {
      metadata: {
        name: userRecordName(input.username),
        namespace: this.keysNamespace,
        labels: { ...labels, [API_KEY_LABEL]: "true" },
      },
      stringData: {
        user,
        account,
        username: input.username,
        passwordHash: hashPassword(input.password),
        email: input.email,
        firstname: input.firstname,
        lastname: input.lastname,
      },
    } as Secret);
    const subject = { apiGroup: "rbac.authorization.k8s.io", kind: "User", name: user };
    const name = `cloudstack-user-${digest}`;
    try {
      await this.client.create(ROLE_BINDINGS, binding(name, account, "stratus-cloud-user", subject, labels));
      await this.client.create(
        CLUSTER_ROLE_BINDINGS,
        binding(`${name}-catalog`, undefined, "stratus-catalog-reader", subject, labels),
      );
      if (role === "Admin")
        await this.client.create(
          CLUSTER_ROLE_BINDINGS,
          binding(`${name}-admin`, undefined, "stratus-cloud-admin", subject, labels),
        );
      await this.syncTenantIdentities(account);
    } catch (error) {
      // Never half a user: what was made goes again.
      await this.deleteUser(record);
      throw error;
    }
    return record;
  }

  /** The account's user records, from the API server (a user made a moment ago included). */
  async users(account?: string): Promise<Secret[]> {
    const selector = account ? `${ACCOUNT_LABEL}=${account}` : ACCOUNT_LABEL;
    const list = await this.client.listAll<Secret>(SECRET, {
      namespace: this.keysNamespace,
      labelSelector: `${selector},${USER_LABEL}`,
    });
    return list.items;
  }

  async userRecord(username: string): Promise<Secret | undefined> {
    return this.client
      .get<Secret>(SECRET, userRecordName(username), this.keysNamespace)
      .catch((error: unknown) => (isNotFound(error) ? undefined : Promise.reject(error)));
  }

  async setKeys(record: Secret, apiKey: string, secretKey: string): Promise<void> {
    await this.client.mergePatch(SECRET, record.metadata.name as string, this.keysNamespace, {
      metadata: { resourceVersion: record.metadata.resourceVersion },
      stringData: { apiKey, secretKey },
    });
  }

  /** Removes the user's record and RBAC, and its name from the account's identities. */
  async deleteUser(record: Secret): Promise<void> {
    const { account, username } = userFields(record);
    await this.client
      .delete(SECRET, record.metadata.name as string, this.keysNamespace, {
        uid: record.metadata.uid as string,
      })
      .catch(ignoreMissing);
    const selector = `${USER_LABEL}=${usernameDigest(username)}`;
    await this.deleteLabelled(ROLE_BINDINGS, selector, account);
    await this.deleteLabelled(CLUSTER_ROLE_BINDINGS, selector);
    await this.syncTenantIdentities(account);
  }

  /**
   * Removes everything made for the account: users' records first (its keys stop working), the
   * identities, the cluster-wide bindings, then the namespace (its VMs, volumes and networks go
   * with it through their finalizers, the RoleBindings in it with it). Missing objects are fine.
   */
  async deleteAccount(account: string, uid?: string): Promise<void> {
    const selector = `${ACCOUNT_LABEL}=${account}`;
    await this.deleteLabelled(SECRET, selector, this.keysNamespace);
    await this.client.delete(CLUSTER_ROLES, tenantIdentitiesRoleName(account)).catch(ignoreMissing);
    await this.deleteLabelled(CLUSTER_ROLE_BINDINGS, selector);
    await this.client.delete(NAMESPACE, account, undefined, uid ? { uid } : {}).catch(ignoreMissing);
  }

  private async deleteLabelled(type: ResourceType, selector: string, namespace?: string): Promise<void> {
    const list = await this.client.listAll(type, {
      labelSelector: selector,
      ...(namespace ? { namespace } : {}),
    });
    for (const object of list.items)
      await this.client
        .delete(type, object.metadata.name as string, object.metadata.namespace, {
          uid: object.metadata.uid as string,
        })
        .catch(ignoreMissing);
  }

  /** The account's tenant-identities ClusterRole names exactly its users (none: no role). */
  private async syncTenantIdentities(account: string): Promise<void> {
    const users = (await this.users(account)).map((record) => userFields(record).user).sort();
    const name = tenantIdentitiesRoleName(account);
    if (users.length === 0) {
      await this.client.delete(CLUSTER_ROLES, name).catch(ignoreMissing);
      return;
    }
    await this.client.apply(
      CLUSTER_ROLES,
      {
        metadata: { name, labels: { [ACCOUNT_LABEL]: account, [TENANT_IDENTITIES_LABEL]: "true" } },
        rules: [{ apiGroups: [""], resources: ["users"], verbs: ["impersonate"], resourceNames: users }],
      },
      { fieldManager: FIELD_MANAGER },
    );
  }
}

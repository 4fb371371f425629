// The CloudStack-compatible endpoint, /client/api: authenticates the API key and signature, runs
// the command as the key's Kubernetes user (impersonation, so RBAC is the one authorization
// system), and answers in CloudStack's envelopes. Lists come from informer caches after an RBAC
// check (SubjectAccessReview); writes go through the API server as the user. Stateless: any
// replica answers any request, jobs included.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import {
  type AsyncJob,
  type DiskOffering,
  type Host,
  type IPAddress,
  type Network,
  Resources,
  type ServiceOffering,
  type SnapshotPolicy,
  type StoragePool,
  type Template,
  type VirtualMachine,
  type VirtualMachineMigration,
  type Volume,
  type VolumeSnapshot,
  type Zone,
} from "../crds/index.ts";
import { isAllowed, isSelfAllowed } from "../runtime/authorization.ts";
import {
  ApiError as KubeApiError,
  type KubeClient,
  type KubeObject,
  type ResourceType,
} from "../runtime/client.ts";
import type { InformerFactory } from "../runtime/component.ts";
import type { Informer } from "../runtime/informer.ts";
import { COMMANDS } from "./commands.ts";
import {
  ApiError,
  ERROR,
  errorBody,
  type Json,
  type Rendered,
  render,
  responseName,
  UNAUTHORIZED_TEXT,
} from "./envelope.ts";
import type { Outcome } from "./jobs.ts";
import { RequestParams } from "./params.ts";
import { issueSession, passwordMatches, readSession, SESSION_SECONDS, sessionCookie } from "./sessions.ts";
import { parseExpires, verifySignature } from "./signature.ts";
import type { SnapshotCatalog } from "./snapshot-views.ts";
import type { Catalog } from "./views.ts";

export const SECRET: ResourceType = {
  group: "",
  version: "v1",
  plural: "secrets",
  kind: "Secret",
  namespaced: true,
};
export const API_KEY_LABEL = "stratus.io/api-key";

export interface Secret extends KubeObject {
  data?: Record<string, string>;
}

/** Who is calling: the Kubernetes user an API key maps to, and its account (namespace). */
export interface Caller {
  user: string;
  groups: string[];
  account: string;
  /** Requests as that user. */
  client: KubeClient;
}

export interface Call {
  params: RequestParams;
  caller: Caller;
  api: CloudStackApi;
}

export type Handler = (call: Call) => Promise<Json>;

export interface Command {
  handler: Handler;
  /** The object name of list items (for XML and listApis), when a list. */
  async?: boolean;
  /** An async command's own end: whether its job's target got where the command asked. */
  outcome?: (job: AsyncJob, api: CloudStackApi) => Outcome;
}

const byUid = <T extends KubeObject>(object: T) => (object.metadata.uid ? [object.metadata.uid] : []);

export class CloudStackApi implements Catalog, SnapshotCatalog {
  readonly client: KubeClient;
  readonly log: Logger;
  readonly zones: Informer<Zone>;
  readonly serviceOfferings: Informer<ServiceOffering>;
  readonly diskOfferings: Informer<DiskOffering>;
  readonly storagePools: Informer<StoragePool>;
  readonly hosts: Informer<Host>;
  readonly templates: Informer<Template>;
  readonly vms: Informer<VirtualMachine>;
  readonly volumes: Informer<Volume>;
  readonly networks: Informer<Network>;
  /** Indexed also by `volume`: `<namespace>/<volume name>`. */
  readonly volumeSnapshots: Informer<VolumeSnapshot>;
  readonly snapshotPolicies: Informer<SnapshotPolicy>;
  readonly ipAddresses: Informer<IPAddress>;
  readonly jobs: Informer<AsyncJob>;
  readonly migrations: Informer<VirtualMachineMigration>;
  private readonly keys: Informer<Secret>;
  private readonly keysNamespace: string;
  /** Signs login sessions; every replica has the same one (see main.ts). */
  sessionKey: Buffer = randomBytes(32);
  private readonly decisions = new Map<string, { allowed: boolean; at: number }>();

  constructor(options: {
    client: KubeClient;
    informers: InformerFactory;
    keysNamespace: string;
    logger: Logger;
  }) {
    const { informers } = options;
    this.client = options.client;
    this.log = options.logger;
    const indexed = { indexers: { uid: byUid } };
    this.zones = informers.for<Zone>(Resources.zones, indexed);
    this.serviceOfferings = informers.for<ServiceOffering>(Resources.serviceOfferings, indexed);
    this.diskOfferings = informers.for<DiskOffering>(Resources.diskOfferings, indexed);
    this.storagePools = informers.for<StoragePool>(Resources.storagePools, indexed);
    this.hosts = informers.for<Host>(Resources.hosts, indexed);
    this.templates = informers.for<Template>(Resources.templates, indexed);
    this.vms = informers.for<VirtualMachine>(Resources.virtualMachines, indexed);
    this.volumes = informers.for<Volume>(Resources.volumes, indexed);
    this.networks = informers.for<Network>(Resources.networks, indexed);
    this.volumeSnapshots = informers.for<VolumeSnapshot>(Resources.volumeSnapshots, {
      indexers: { uid: byUid, volume: (s) => [`${s.metadata.namespace}/${s.spec.volume}`] },
    });
    this.snapshotPolicies = informers.for<SnapshotPolicy>(Resources.snapshotPolicies, indexed);
    this.ipAddresses = informers.for<IPAddress>(Resources.ipAddresses, {
      indexers: {
        vm: (a) => (a.spec.virtualMachine ? [`${a.metadata.namespace}/${a.spec.virtualMachine}`] : []),
      },
    });
    this.jobs = informers.for<AsyncJob>(Resources.asyncJobs, indexed);
    this.migrations = informers.for<VirtualMachineMigration>(Resources.virtualMachineMigrations, indexed);
    this.keysNamespace = options.keysNamespace;
    this.keys = informers.for<Secret>(SECRET, {
      namespace: options.keysNamespace,
      labelSelector: API_KEY_LABEL,
      indexers: { apiKey: (secret) => (secret.data?.apiKey ? [decode(secret.data.apiKey)] : []) },
    });
  }

  // Catalog: what views look up.
  zone = (name: string) => this.zones.get(name);
  serviceOffering = (name: string) => this.serviceOfferings.get(name);
  diskOffering = (name: string) => this.diskOfferings.get(name);
  storagePool = (name: string) => this.storagePools.get(name);
  template = (name: string) => this.templates.get(name);
  network = (namespace: string, name: string) => this.networks.get(`${namespace}/${name}`);
  addresses = (namespace: string, vm: string) => this.ipAddresses.byIndex("vm", `${namespace}/${vm}`);
  volume = (namespace: string, name: string) => this.volumes.get(`${namespace}/${name}`);
  snapshotPolicy = (namespace: string, name: string) => this.snapshotPolicies.get(`${namespace}/${name}`);

  command(name: string): Command | undefined {
    return Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  }

  /** Answers one request; never throws. */
  async handle(sources: URLSearchParams[], cookieHeader?: string): Promise<Rendered> {
    const params = new RequestParams(sources);
    const format = params.get("response")?.toLowerCase() === "json" ? "json" : "xml";
    const command = params.command;
    try {
      if (command === "login") return this.login(params, format);
      const caller = this.authenticate(params, cookieHeader);
      if (!(await this.mayActAs(caller))) throw new ApiError(ERROR.UNAUTHORIZED, UNAUTHORIZED_TEXT);
      if (command === "logout")
        return {
          ...render(responseName(command), { description: "success" }, format),
          cookies: [
            "sessionkey=; Path=/client; Max-Age=0; HttpOnly",
            "JSESSIONID=; Path=/client; Max-Age=0; HttpOnly",
          ],
        };
      const entry = COMMANDS[command];
      if (!command) throw new ApiError(ERROR.UNSUPPORTED_ACTION, "no command sent");
      if (!entry)
        throw new ApiError(
          ERROR.UNSUPPORTED_ACTION,
          `The given command:${command} does not exist or it is not available for the user`,
        );
      const body = await entry.handler({ params, caller, api: this });
      return render(responseName(command), body, format);
    } catch (error) {
      const failure = this.asApiError(error, command);
      const name =
        failure.code === ERROR.UNSUPPORTED_ACTION || !command ? "errorresponse" : responseName(command);
      return render(name, errorBody(failure.code, failure.message), format, failure.code);
    }
  }

  /** Kubernetes failures in CloudStack's terms: 403 is a permission error, 404 an unknown entity. */
  asApiError(error: unknown, command: string): ApiError {
    if (error instanceof ApiError) return error;
    if (error instanceof KubeApiError) {
      if (error.status === 403)
        return new ApiError(
          ERROR.ACCOUNT,
          `Account does not have permission to perform this operation (${command})`,
        );
      if (error.status === 422 || error.status === 400)
        return new ApiError(ERROR.PARAM, error.body?.message ?? error.message);
      if (error.status === 409 && error.reason === "AlreadyExists")
        return new ApiError(
          ERROR.PARAM,
          `Unable to execute API command ${command.toLowerCase()}: ${error.body?.message ?? error.message}`,
        );
      if (error.status === 409)
        return new ApiError(ERROR.RESOURCE_IN_USE, error.body?.message ?? error.message);
    }
    this.log.error(
      { err: error instanceof Error ? error.message : String(error), command },
      "command failed",
    );
    return new ApiError(ERROR.INTERNAL, `Internal error executing command ${command}`);
  }

  /** login: username and password of an account's key Secret give a session (docs/LEGACY-API.md 1.7). */
  private login(params: RequestParams, format: "json" | "xml"): Rendered {
    const username = params.required("username");
    const password = params.required("password");
    const secret = this.keys.list().find((s) => s.data?.username && decode(s.data.username) === username);
    const expected = secret?.data?.password ? decode(secret.data.password) : "";
    if (!secret || !passwordMatches(password, expected))
      throw new ApiError(
        ERROR.UNAUTHORIZED,
        `Failed to authenticate user ${username}; please provide valid credentials`,
      );
    const caller = this.callerOf(secret);
    const sessionKey = issueSession(secret.metadata.name as string, this.sessionKey);
    return {
      ...render(
        "loginresponse",
        {
          username,
          userid: secret.metadata.uid as string,
          domainid: "0f1e2d3c-4b5a-4968-8776-655443322110",
          timeout: SESSION_SECONDS,
          account: caller.account,
          firstname: username,
          lastname: username,
          type: "0",
          timezone: "UTC",
          registered: "false",
          sessionkey: sessionKey,
          is2faenabled: "false",
          is2faverified: "true",
        },
        format,
      ),
      cookies: [
        `sessionkey=${sessionKey}; Path=/client; HttpOnly`,
        `JSESSIONID=${randomBytes(16).toString("hex")}; Path=/client; HttpOnly`,
      ],
    };
  }

  private authenticate(params: RequestParams, cookieHeader?: string): Caller {
    const apiKey = params.get("apikey");
    const signature = params.get("signature");
    if (!apiKey) {
      const sessionKey = params.get("sessionkey") ?? sessionCookie(cookieHeader);
      const session = sessionKey ? readSession(sessionKey, this.sessionKey) : undefined;
      const secret = session ? this.keys.get(`${this.keysNamespace}/${session.keySecret}`) : undefined;
      if (!secret) throw new ApiError(ERROR.UNAUTHORIZED, UNAUTHORIZED_TEXT);
      return this.callerOf(secret);
    }
    if (!signature) throw new ApiError(ERROR.UNAUTHORIZED, UNAUTHORIZED_TEXT);
    const [secret] = this.keys.byIndex("apiKey", apiKey);
    const secretKey = secret?.data?.secretKey ? decode(secret.data.secretKey) : undefined;
    if (!secret || !secretKey || !verifySignature(params.raw, signature, secretKey))
      throw new ApiError(ERROR.UNAUTHORIZED, UNAUTHORIZED_TEXT);
    if (params.get("signatureversion") === "3") {
      const expires = parseExpires(params.get("expires") ?? "");
      if (!expires || expires.getTime() < Date.now())
        throw new ApiError(ERROR.UNAUTHORIZED, UNAUTHORIZED_TEXT);
    }
    return this.callerOf(secret);
  }

  private callerOf(secret: Secret): Caller {
    const data = secret.data ?? {};
    const user = data.user ? decode(data.user) : "";
    const account = data.account ? decode(data.account) : "";
    if (!user || !account) throw new ApiError(ERROR.UNAUTHORIZED, UNAUTHORIZED_TEXT);
    const groups = data.groups
      ? decode(data.groups)
          .split(",")
          .map((g) => g.trim())
          .filter(Boolean)
      : [];
    return { user, groups, account, client: this.client.impersonating(user, groups) };
  }

  /**
   * Whether RBAC lets this component act as the key's user and groups (impersonation): a key that
   * names an identity no account has (system:masters, a system ServiceAccount) is refused before
   * anything is read for it from the caches, not only when it writes. Cached 10 s.
   */
  private async mayActAs(caller: Caller): Promise<boolean> {
    const key = ["impersonate", caller.user, caller.groups.join(",")].join("|");
    const cached = this.decisions.get(key);
    if (cached && Date.now() - cached.at < 10_000) return cached.allowed;
    const serviceAccount = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(caller.user);
    const identities = [
      serviceAccount
        ? { resource: "serviceaccounts", namespace: serviceAccount[1], name: serviceAccount[2] as string }
        : { resource: "users", name: caller.user },
      ...caller.groups.map((group) => ({ resource: "groups", name: group })),
    ];
    const answers = await Promise.all(
      identities.map((identity) =>
        isSelfAllowed(this.client, { verb: "impersonate", group: "", ...identity }),
      ),
    );
    const allowed = answers.every(Boolean);
    if (!allowed)
      this.log.warn(
        { user: caller.user, groups: caller.groups },
        "an API key names an identity this component may not act as",
      );
    this.decisions.set(key, { allowed, at: Date.now() });
    return allowed;
  }

  /** Whether the caller may `verb` the resource (in `namespace`): a SubjectAccessReview, cached 10 s. */
  async can(caller: Caller, verb: string, type: ResourceType, namespace?: string): Promise<boolean> {
    const key = [caller.user, caller.groups.join(","), verb, type.plural, namespace ?? ""].join("|");
    const cached = this.decisions.get(key);
    if (cached && Date.now() - cached.at < 10_000) return cached.allowed;
    const allowed = await isAllowed(this.client, {
      user: caller.user,
      groups: caller.groups,
      verb,
      group: type.group,
      resource: type.plural,
      namespace,
    });
    this.decisions.set(key, { allowed, at: Date.now() });
    return allowed;
  }

  /** The namespaces a list covers: the caller's account, or with listall/projectid=-1 every one it may list. */
  async listNamespaces(call: Call, type: ResourceType, informer: Informer<KubeObject>): Promise<string[]> {
    const everywhere = call.params.flag("listall") || call.params.get("projectid") === "-1";
    const candidates = everywhere
      ? [...new Set([call.caller.account, ...informer.list().map((o) => o.metadata.namespace as string)])]
      : [call.caller.account];
    const allowed: string[] = [];
    for (const namespace of candidates)
      if (await this.can(call.caller, "list", type, namespace)) allowed.push(namespace);
    return allowed;
  }
}

function decode(value: string): string {
  return Buffer.from(value, "base64").toString("utf8");
}

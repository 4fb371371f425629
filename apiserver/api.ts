// The CloudStack-compatible endpoint, /client/api: authenticates the caller (authentication.ts),
// runs the command as the key's Kubernetes user (impersonation, so RBAC is the one authorization
// system), and answers in CloudStack's envelopes. Lists come from informer caches after an RBAC
// check (SubjectAccessReview, access.ts); writes go through the API server as the user.
// Stateless: any replica answers any request, jobs and sessions included.
import type { Logger } from "pino";
import { groupsOf } from "../controllers/scheduler/host-usage.ts";
import { watchClusterRanges } from "../crds/cluster-ranges.ts";
import type { ReservedRange } from "../crds/guest-ranges.ts";
import {
  type AffinityGroup,
  type AsyncJob,
  type DiskOffering,
  type EgressFirewallRule,
  type FirewallRule,
  type Host,
  type IPAddress,
  type LoadBalancerRule,
  type Network,
  type PortForwardingRule,
  type PublicIPAddress,
  Resources,
  type ServiceOffering,
  type SnapshotPolicy,
  type SSHKeyPair,
  type StoragePool,
  type Template,
  type UserData,
  type VirtualMachine,
  type VirtualMachineMigration,
  type Volume,
  type VolumeSnapshot,
  type Zone,
} from "../crds/index.ts";
import {
  isQuotaRefusal,
  isQuotaUncounted,
  quotaRefusalText,
  RESOURCE_LIMITS_QUOTA,
  RESOURCE_QUOTAS,
  type ResourceQuota,
  storageLimitOf,
} from "../crds/resource-limits.ts";
import { isAllowed, isSelfAllowed } from "../runtime/authorization.ts";
import {
  ApiError as KubeApiError,
  type KubeClient,
  type KubeObject,
  NAMESPACE,
  type ResourceType,
} from "../runtime/client.ts";
import type { InformerFactory } from "../runtime/component.ts";
import type { Informer } from "../runtime/informer.ts";
import { AccessReviews, type ReviewedType } from "./access.ts";
import { ACCOUNT_LABEL } from "./account-records.ts";
import { Authentication, type Caller, type ClientRequest } from "./authentication.ts";
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
import type { SnapshotCatalog } from "./snapshot-views.ts";
import type { Catalog } from "./views.ts";

export { API_KEY_LABEL, type Caller, type ClientRequest, SECRET, type Secret } from "./authentication.ts";

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
  /** Indexed also by `network`: `<namespace>/<network name>`. */
  readonly publicIPAddresses: Informer<PublicIPAddress>;
  readonly portForwardingRules: Informer<PortForwardingRule>;
  readonly firewallRules: Informer<FirewallRule>;
  readonly loadBalancerRules: Informer<LoadBalancerRule>;
  readonly egressFirewallRules: Informer<EgressFirewallRule>;
  readonly jobs: Informer<AsyncJob>;
  readonly migrations: Informer<VirtualMachineMigration>;
  readonly affinityGroups: Informer<AffinityGroup>;
  readonly sshKeyPairs: Informer<SSHKeyPair>;
  /** Registered user data (registerUserData). */
  readonly registeredUserData: Informer<UserData>;
  readonly authentication: Authentication;
  /** The accounts' limits (ResourceQuota stratus-resource-limits of each namespace). */
  readonly limits: Informer<ResourceQuota>;
  /** The namespaces that are CloudStack accounts made by createAccount (labelled), by name and uid. */
  readonly accountNamespaces: Informer<KubeObject>;
  /** The cluster's Service and pod ranges, which createNetwork keeps guest networks off. */
  readonly clusterRanges: () => ReservedRange[];
  /** Where API keys and the records of users made by createAccount/createUser live. */
  readonly keysNamespace: string;
  private readonly access: AccessReviews;
  /** Whether this component may act as a key's identity, by identity (see mayActAs). */
  private readonly impersonation = new Map<string, { allowed: boolean; at: number }>();

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
    this.vms = informers.for<VirtualMachine>(Resources.virtualMachines, {
      indexers: { uid: byUid, affinityGroup: (vm) => groupsOf(vm) },
    });
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
    this.publicIPAddresses = informers.for<PublicIPAddress>(Resources.publicIPAddresses, indexed);
    this.portForwardingRules = informers.for<PortForwardingRule>(Resources.portForwardingRules, indexed);
    this.firewallRules = informers.for<FirewallRule>(Resources.firewallRules, indexed);
    this.loadBalancerRules = informers.for<LoadBalancerRule>(Resources.loadBalancerRules, indexed);
    this.egressFirewallRules = informers.for<EgressFirewallRule>(Resources.egressFirewallRules, indexed);
    this.jobs = informers.for<AsyncJob>(Resources.asyncJobs, indexed);
    this.migrations = informers.for<VirtualMachineMigration>(Resources.virtualMachineMigrations, indexed);
    this.affinityGroups = informers.for<AffinityGroup>(Resources.affinityGroups, indexed);
    this.sshKeyPairs = informers.for<SSHKeyPair>(Resources.sshKeyPairs, indexed);
    this.registeredUserData = informers.for<UserData>(Resources.userData, indexed);
    this.limits = informers.for<ResourceQuota>(RESOURCE_QUOTAS, {
      fieldSelector: `metadata.name=${RESOURCE_LIMITS_QUOTA}`,
    });
    this.accountNamespaces = informers.for<KubeObject>(NAMESPACE, {
      labelSelector: ACCOUNT_LABEL,
      ...indexed,
    });
    this.clusterRanges = watchClusterRanges(informers).current;
    this.keysNamespace = options.keysNamespace;
    this.authentication = new Authentication(options);
    this.access = new AccessReviews((request) => isAllowed(this.client, request));
  }

  /** Whether the account has a primary-storage limit (its volumes wait for the storage grant). */
  storageLimited = (account: string) =>
    storageLimitOf(this.limits.get(`${account}/${RESOURCE_LIMITS_QUOTA}`)?.spec?.hard) !== undefined;

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
  affinityGroup = (namespace: string, name: string) => this.affinityGroups.get(`${namespace}/${name}`);
  keyPair = (namespace: string, name: string) => this.sshKeyPairs.get(`${namespace}/${name}`);
  vm = (namespace: string, name: string) => this.vms.get(`${namespace}/${name}`);
  publicAddress = (namespace: string, name: string) => this.publicIPAddresses.get(`${namespace}/${name}`);

  command(name: string): Command | undefined {
    return Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  }

  /** Answers one request; never throws. */
  async handle(request: ClientRequest): Promise<Rendered> {
    const format = responseFormat([request.query, request.form]);
    let command = "";
    try {
      const params = new RequestParams([request.query, request.form]);
      command = params.command;
      if (command === "login") return this.authentication.login(params, request, format);
      const { caller, session } = this.authentication.authenticate(params, request);
      if (!(await this.mayActAs(caller))) throw new ApiError(ERROR.UNAUTHORIZED, UNAUTHORIZED_TEXT);
      if (command === "logout") return await this.authentication.logout(session, request, format);
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
      if (isQuotaUncounted(error))
        return new ApiError(
          ERROR.RESOURCE_UNAVAILABLE,
          "The account's resource limits were just changed and are still being counted; try again in a moment",
        );
      if (isQuotaRefusal(error))
        return new ApiError(ERROR.RESOURCE_ALLOCATION, quotaRefusalText(error.message));
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

  /**
   * Whether RBAC lets this component act as the key's user and groups (impersonation): a key that
   * names an identity no account has (system:masters, a system ServiceAccount) is refused before
   * anything is read for it from the caches, not only when it writes. Cached 10 s.
   */
  private async mayActAs(caller: Caller): Promise<boolean> {
    const key = ["impersonate", caller.user, caller.groups.join(",")].join("|");
    const cached = this.impersonation.get(key);
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
    if (this.impersonation.size >= 10_000) this.impersonation.clear();
    this.impersonation.set(key, { allowed, at: Date.now() });
    return allowed;
  }

  /** Whether the caller may `verb` the resource (in `namespace`): a SubjectAccessReview, cached 10 s. */
  can(caller: Caller, verb: string, type: ReviewedType, namespace?: string): Promise<boolean> {
    return this.access.can(caller, verb, type, namespace);
  }

  /** The namespaces a list covers: the caller's account, or with listall/projectid=-1 every one it may list. */
  async listNamespaces(call: Call, type: ResourceType, informer: Informer<KubeObject>): Promise<string[]> {
    const everywhere = call.params.flag("listall") || call.params.get("projectid") === "-1";
    if (!everywhere)
      return (await this.can(call.caller, "list", type, call.caller.account)) ? [call.caller.account] : [];
    const candidates = new Set([
      call.caller.account,
      ...informer.list().map((o) => o.metadata.namespace as string),
    ]);
    return this.access.namespacesAllowed(call.caller, "list", type, [...candidates]);
  }
}

/** `response=json` or XML, CloudStack's default, read before the parameters are checked. */
function responseFormat(sources: readonly URLSearchParams[]): "json" | "xml" {
  for (const source of sources)
    for (const [name, value] of source)
      if (name.toLowerCase() === "response") return value.toLowerCase() === "json" ? "json" : "xml";
  return "xml";
}

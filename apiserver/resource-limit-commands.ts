// CloudStack's account resource limits: updateResourceLimit, listResourceLimits and
// updateResourceCount, over the account namespace's ResourceQuota stratus-resource-limits
// (crds/resource-limits.ts says who enforces what). Limits are written as the caller (RBAC:
// stratus-cloud-admin holds resourcequotas), each type under a field manager of its own, so setting
// one limit never drops another, whether set here or with kubectl.
import type { VirtualMachine } from "../crds/index.ts";
import {
  accountComputeUse,
  inUnitOf,
  maxOf,
  quotaValueOf,
  RESOURCE_LIMITS_QUOTA,
  RESOURCE_QUOTAS,
  RESOURCE_TYPES,
  type ResourceQuota,
  type ResourceType,
  resourceTypeOf,
} from "../crds/resource-limits.ts";
import { accountStorageBytes } from "../crds/volume-admission.ts";
import { isNotFound, NAMESPACE } from "../runtime/client.ts";
import { requireAdministrator } from "./account-commands.ts";
import { accountNamespace } from "./account-input.ts";
import type { Call, Command } from "./api.ts";
import { ApiError, ERROR, type Json, ROOT_DOMAIN_ID } from "./envelope.ts";
import { page } from "./listing.ts";

/** The largest limit accepted: CloudStack's are Java longs; a quota of 2^31 objects is no limit. */
const MAX_LIMIT = 2 ** 31 - 1;
const FIELD_MANAGER_PREFIX = "stratus-apiserver-limit-";

/** The account a command is about: `account` (an administrator's, for another) or the caller's own. */
async function accountOf(call: Call): Promise<string> {
  const domain = call.params.get("domainid");
  if (domain && domain.toLowerCase() !== ROOT_DOMAIN_ID)
    throw new ApiError(ERROR.PARAM, `Unable to find domain by id ${domain}: Stratus has one domain, ROOT`);
  const account = call.params.get("account") ?? call.caller.account;
  if (account !== call.caller.account) {
    await requireAdministrator(call);
    accountNamespace(account); // a system namespace, or no DNS label, is no account: 431
    const exists = await call.api.client.get(NAMESPACE, account).then(
      () => true,
      (error: unknown) => {
        if (isNotFound(error)) return false;
        throw error;
      },
    );
    if (!exists) throw new ApiError(ERROR.PARAM, `Unable to find account by name ${account} in domain ROOT`);
  }
  return account;
}

/** The resource types `resourcetype`/`resourcetypename` select (all of them when neither is given). */
function typesOf(call: Call): readonly ResourceType[] {
  const named = call.params.get("resourcetype") ?? call.params.get("resourcetypename");
  if (named === undefined) return RESOURCE_TYPES;
  const type = resourceTypeOf(named);
  if (!type)
    throw new ApiError(
      ERROR.PARAM,
      `Invalid resource type ${named}: one of ${RESOURCE_TYPES.map((t) => `${t.type} (${t.name})`).join(", ")}`,
    );
  return [type];
}

async function quotaOf(call: Call, account: string): Promise<ResourceQuota | undefined> {
  return call.caller.client
    .get<ResourceQuota>(RESOURCE_QUOTAS, RESOURCE_LIMITS_QUOTA, account)
    .catch((error) => {
      if (isNotFound(error)) return undefined;
      throw error;
    });
}

const domainFields = { domain: "ROOT", domainid: ROOT_DOMAIN_ID, domainpath: "ROOT" };

function limitView(account: string, type: ResourceType, max: number): Json {
  return {
    account,
    ...domainFields,
    max,
    resourcetype: String(type.type),
    resourcetypename: type.name,
  };
}

const listResourceLimits: Command = {
  async handler(call) {
    const account = await accountOf(call);
    const hard = (await quotaOf(call, account))?.spec?.hard;
    return page(
      call,
      "resourcelimit",
      typesOf(call).map((type) => limitView(account, type, maxOf(type, hard))),
    );
  },
};

const updateResourceLimit: Command = {
  async handler(call) {
    await requireAdministrator(call);
    if (!call.params.get("account"))
      throw new ApiError(ERROR.PARAM, "Stratus keeps limits per account: name the account (and domainid)");
    const account = await accountOf(call);
    call.params.required("resourcetype");
    const [chosen] = typesOf(call) as [ResourceType];
    if (!chosen.quotaKey)
      throw new ApiError(
        ERROR.PARAM,
        `Resource type ${chosen.type} (${chosen.name}) cannot be limited: ${chosen.unlimitable}`,
      );
    const max = call.params.integer("max") ?? -1;
    if (max < -1 || max > MAX_LIMIT)
      throw new ApiError(ERROR.PARAM, `max must be -1 (no limit) or 0 to ${MAX_LIMIT}, not ${max}`);
    // This type's own field manager: applying without the key drops it and nothing else.
    await call.caller.client.apply(
      RESOURCE_QUOTAS,
      {
        metadata: { name: RESOURCE_LIMITS_QUOTA, namespace: account },
        spec: { hard: max === -1 ? {} : { [chosen.quotaKey]: quotaValueOf(chosen, max) } },
      },
      { fieldManager: `${FIELD_MANAGER_PREFIX}${chosen.name.replaceAll("_", "-")}` },
    );
    return { resourcelimit: limitView(account, chosen, max) };
  },
};

/** What the account holds of each type, as Stratus counts it against the limits. */
function countOf(call: Call, account: string, type: ResourceType): number | undefined {
  const inAccount = <T extends { metadata: { namespace?: string } }>(objects: T[]) =>
    objects.filter((o) => o.metadata.namespace === account).length;
  const { api } = call;
  const compute = () =>
    accountComputeUse(
      api.vms.list().filter((vm: VirtualMachine) => vm.metadata.namespace === account),
      (name) => api.serviceOfferings.get(name),
    );
  switch (type.name) {
    case "user_vm":
      return inAccount(api.vms.list());
    case "volume":
      return inAccount(api.volumes.list());
    case "snapshot":
      return inAccount(api.volumeSnapshots.list());
    case "network":
      return inAccount(api.networks.list());
    case "public_ip":
      return inAccount(api.publicIPAddresses.list());
    case "cpu":
      return compute().cpu;
    case "memory":
      return inUnitOf(type, compute().memoryBytes);
    case "primary_storage":
      return inUnitOf(
        type,
        accountStorageBytes(api.volumes.list().filter((v) => v.metadata.namespace === account)),
      );
    default:
      return type.quotaKey ? 0 : undefined;
  }
}

const updateResourceCount: Command = {
  async handler(call) {
    call.params.required("domainid");
    const account = await accountOf(call);
    const counts = typesOf(call).flatMap((type) => {
      const count = countOf(call, account, type);
      return count === undefined
        ? []
        : [
            {
              account,
              ...domainFields,
              resourcecount: count,
              resourcetype: String(type.type),
              resourcetypename: type.name,
            },
          ];
    });
    return page(call, "resourcecount", counts);
  },
};

export const RESOURCE_LIMIT_COMMANDS: Record<string, Command> = {
  listResourceLimits,
  updateResourceLimit,
  updateResourceCount,
};

// What every list and by-id command shares: paging with the total count, CloudStack's id/name/
// keyword filters, lookup by UID (the CloudStack id), and the RBAC check for cluster-scoped lists.
import { isConflict, type KubeObject, type ResourceType } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Call } from "./api.ts";
import { ApiError, ERROR, entityNotFound, type Json, listBody } from "./envelope.ts";

const DEFAULT_PAGE_SIZE = 500;

/** One page of `items` (page/pagesize), with the total count clients page by. */
export function page(call: Call, itemKey: string, items: Json[]): Json {
  const size = call.params.integer("pagesize") ?? DEFAULT_PAGE_SIZE;
  const number = call.params.integer("page") ?? 1;
  if (size < 1 || number < 1) throw new ApiError(ERROR.PARAM, "page and pagesize must be positive");
  return listBody(itemKey, items.slice((number - 1) * size, number * size), items.length);
}

/**
 * `id`, `name` (exact, as Terraform needs) and `keyword` (substring) filters. `nameOf` is the
 * CloudStack name where it is not the object's (a load-balancer rule's free-text name).
 */
export function filtered<T extends KubeObject>(
  call: Call,
  objects: T[],
  displayName: (o: T) => string | undefined = () => undefined,
  nameOf: (o: T) => string | undefined = (o) => o.metadata.name,
): T[] {
  const id = call.params.get("id")?.toLowerCase();
  const ids = call.params.list("ids").map((i) => i.toLowerCase());
  const name = call.params.get("name");
  const keyword = call.params.get("keyword")?.toLowerCase();
  return objects
    .filter((o) => !id || o.metadata.uid === id)
    .filter((o) => ids.length === 0 || ids.includes(o.metadata.uid as string))
    .filter((o) => !name || nameOf(o) === name)
    .filter(
      (o) =>
        !keyword ||
        (o.metadata.name as string).toLowerCase().includes(keyword) ||
        (displayName(o) ?? "").toLowerCase().includes(keyword),
    )
    .sort((a, b) => (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? ""));
}

/** The object with this UID (the CloudStack id), or the 431 Terraform reads as "gone". */
export function byId<T extends KubeObject>(informer: Informer<T>, call: Call, parameter: string): T {
  const id = call.params.requiredUuid(parameter);
  const [object] = informer.byIndex("uid", id);
  if (!object) throw entityNotFound(parameter, id);
  return object;
}

export async function requireClusterRead(call: Call, type: ResourceType): Promise<void> {
  if (!(await call.api.can(call.caller, "list", type)))
    throw new ApiError(ERROR.ACCOUNT, `Account ${call.caller.account} may not list ${type.plural}`);
}

/**
 * A namespaced object the caller reaches by id: in a namespace it may `get` in. Another account's
 * object answers as an unknown id (431), so a foreign id tells nothing, not even that it exists.
 */
export async function ownedByUid<T extends KubeObject>(
  call: Call,
  informer: Informer<T>,
  type: ResourceType,
  parameter: string,
  id: string,
): Promise<T> {
  const [object] = informer.byIndex("uid", id.toLowerCase());
  if (!object || !(await call.api.can(call.caller, "get", type, object.metadata.namespace)))
    throw entityNotFound(parameter, id);
  return object;
}

/** ownedByUid with the id of the request's `parameter`. */
export function ownedById<T extends KubeObject>(
  call: Call,
  informer: Informer<T>,
  type: ResourceType,
  parameter = "id",
): Promise<T> {
  return ownedByUid(call, informer, type, parameter, call.params.requiredUuid(parameter));
}

/** The objects of the namespaces a list covers (the caller's account, or with listall every one it may list). */
export async function namespaced<T extends KubeObject>(
  call: Call,
  informer: Informer<T>,
  type: ResourceType,
): Promise<T[]> {
  const namespaces = new Set(
    await call.api.listNamespaces(call, type, informer as unknown as Informer<KubeObject>),
  );
  return informer.list().filter((o) => namespaces.has(o.metadata.namespace as string));
}

/** The object after a merge patch as the caller, or as it is when there is nothing to change. */
export async function patched<T extends KubeObject>(
  call: Call,
  type: ResourceType,
  object: T,
  patch: Record<string, unknown> | undefined,
): Promise<T> {
  if (patch === undefined) return object;
  return call.caller.client.mergePatch<T>(
    type,
    object.metadata.name as string,
    object.metadata.namespace,
    patch,
  );
}

/**
 * A merge patch as the caller computed from the object's current version and guarded by its
 * resourceVersion (two changes at once must not drop one), retried when it changed meanwhile.
 */
export async function patchFromCurrent<T extends KubeObject>(
  call: Call,
  type: ResourceType,
  object: T,
  patchOf: (current: T) => Record<string, unknown>,
): Promise<void> {
  const { name, namespace } = object.metadata;
  for (let attempt = 0; ; attempt++) {
    const current = await call.caller.client.get<T>(type, name as string, namespace);
    try {
      await call.caller.client.mergePatch(type, name as string, namespace, {
        ...patchOf(current),
        metadata: { resourceVersion: current.metadata.resourceVersion },
      });
      return;
    } catch (error) {
      if (!isConflict(error) || attempt >= 4) throw error;
    }
  }
}

/**
 * Commands that make or delete an account's own objects act in the caller's account: `account` or
 * `projectid` naming another is refused rather than ignored.
 */
export function requireOwnAccount(call: Call): void {
  const account = call.params.get("account");
  const project = call.params.get("projectid");
  if ((account && account !== call.caller.account) || (project && project !== "-1"))
    throw new ApiError(
      ERROR.PARAM,
      `Stratus runs ${call.params.command} in the caller's own account (${call.caller.account}) only: account and projectid may not name another`,
    );
}

/** `account=` on a list: only that account's objects (the namespaces listed are already allowed). */
export function inAccount<T extends KubeObject>(call: Call, objects: T[]): T[] {
  const account = call.params.get("account");
  return account ? objects.filter((o) => o.metadata.namespace === account) : objects;
}

/** CloudStack names (key pairs, user data) are free text of at most 255 characters. */
const CLOUDSTACK_NAME_MAX = 255;

/** `name` of an object the caller makes or deletes in its own account: printable, at most 255. */
export function requiredOwnName(call: Call): string {
  requireOwnAccount(call);
  const name = call.params.required("name");
  if (name.length > CLOUDSTACK_NAME_MAX || [...name].some((c) => c < " "))
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter name value=${name.slice(0, 40)}: a name is at most ${CLOUDSTACK_NAME_MAX} printable characters`,
    );
  return name;
}

/**
 * Waits up to `graceMs` for an object made a moment ago (by this replica or another) to reach this
 * replica's cache, so a client that uses an id right after making it is not told it is unknown.
 */
export async function cachedSoon<T extends KubeObject>(
  informer: Informer<T>,
  uid: string,
  graceMs = 2_000,
): Promise<void> {
  for (
    let waited = 0;
    informer.byIndex("uid", uid.toLowerCase()).length === 0 && waited < graceMs;
    waited += 100
  )
    await new Promise((resolve) => setTimeout(resolve, 100));
}

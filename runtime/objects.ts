// Writes a reconciler makes: status only when it changed, finalizers, owner references.
import {
  apiVersionOf,
  isConflict,
  isNotFound,
  type KubeClient,
  type KubeObject,
  type OwnerReference,
  type ResourceType,
} from "./client.ts";

/** True when every field of `desired` equals the same field of `actual` (arrays compared whole). */
export function isSubset(desired: unknown, actual: unknown): boolean {
  if (desired === actual) return true;
  if (Array.isArray(desired)) {
    return (
      Array.isArray(actual) &&
      desired.length === actual.length &&
      desired.every((d, i) => isSubset(d, actual[i]) && isSubset(actual[i], d))
    );
  }
  if (desired && typeof desired === "object") {
    if (!actual || typeof actual !== "object" || Array.isArray(actual)) return false;
    return Object.entries(desired).every(([key, value]) =>
      isSubset(value, (actual as Record<string, unknown>)[key]),
    );
  }
  return false;
}

/**
 * Whether the object's status already says what `status` says. Conditions are a list map keyed by
 * type that several writers share, so each desired condition is compared with the one of its type.
 */
export function statusSays(status: Record<string, unknown>, actual: Record<string, unknown>): boolean {
  const { conditions, ...rest } = status;
  if (!isSubset(rest, actual)) return false;
  if (conditions === undefined) return true;
  const current = Array.isArray(actual.conditions) ? (actual.conditions as { type?: unknown }[]) : [];
  return (conditions as { type: unknown }[]).every((condition) =>
    isSubset(
      condition,
      current.find((c) => c.type === condition.type),
    ),
  );
}

/**
 * Applies `status` through the status subresource with server-side apply, unless the object's
 * status already says exactly that. Returns whether it wrote. A writer applies only the fields and
 * condition types it owns; server-side apply keeps the other writers' conditions.
 */
export async function applyStatus(
  client: KubeClient,
  type: ResourceType,
  object: KubeObject & { status?: unknown },
  status: Record<string, unknown>,
  fieldManager: string,
): Promise<boolean> {
  if (statusSays(status, (object.status ?? {}) as Record<string, unknown>)) return false;
  const { name, namespace } = object.metadata;
  await client.apply(
    type,
    { metadata: { name: name as string, ...(namespace ? { namespace } : {}) }, status },
    { fieldManager, subresource: "status" },
  );
  return true;
}

/** Adds a finalizer; returns false when it was already there. Guarded by resourceVersion. */
export function addFinalizer(
  client: KubeClient,
  type: ResourceType,
  object: KubeObject,
  finalizer: string,
): Promise<boolean> {
  return setFinalizer(client, type, object, finalizer, true);
}

/** Removes a finalizer; returns false when it was not there. Guarded by resourceVersion. */
export function removeFinalizer(
  client: KubeClient,
  type: ResourceType,
  object: KubeObject,
  finalizer: string,
): Promise<boolean> {
  return setFinalizer(client, type, object, finalizer, false);
}

async function setFinalizer(
  client: KubeClient,
  type: ResourceType,
  object: KubeObject,
  finalizer: string,
  present: boolean,
): Promise<boolean> {
  const finalizers = object.metadata.finalizers ?? [];
  if (finalizers.includes(finalizer) === present) return false;
  const { name, namespace, resourceVersion } = object.metadata;
  await client.mergePatch(type, name as string, namespace, {
    metadata: {
      finalizers: present ? [...finalizers, finalizer] : finalizers.filter((f) => f !== finalizer),
      resourceVersion,
    },
  });
  return true;
}

/**
 * For a finalizer write that found the object gone or changed meanwhile: "did not write" instead of
 * an error, since the watch brings the next version and the reconciler looks again.
 */
export function notWrittenIfGone(error: unknown): false {
  if (isNotFound(error) || isConflict(error)) return false;
  throw error;
}

/** A read of an object that may not exist: undefined when it does not. */
export function unlessGone<T>(read: Promise<T>): Promise<T | undefined> {
  return read.catch((error: unknown) => {
    if (isNotFound(error)) return undefined;
    throw error;
  });
}

/** An owner reference to `owner`, so garbage collection removes the child with it. */
export function ownerReference(type: ResourceType, owner: KubeObject, controller = true): OwnerReference {
  return {
    apiVersion: apiVersionOf(type),
    kind: type.kind,
    name: owner.metadata.name as string,
    uid: owner.metadata.uid as string,
    controller,
    blockOwnerDeletion: true,
  };
}

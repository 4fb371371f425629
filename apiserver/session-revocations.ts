// Logout revokes its session before it expires. Sessions are signed keys that every replica reads
// without a lookup (sessions.ts), so nothing in memory can revoke one: a revocation is shared
// state, one ConfigMap per account key in the keys namespace, which every replica watches. The
// replica that answers logout refuses the key from then on; the others within their watch's
// latency (milliseconds). The record names sessions by a hash, so it holds no usable key, and is
// owned by the key Secret, so it goes when the key goes.
import { createHash } from "node:crypto";
import {
  isAlreadyExists,
  isNotFound,
  type KubeClient,
  type KubeObject,
  type ResourceType,
} from "../runtime/client.ts";
import type { InformerFactory } from "../runtime/component.ts";
import type { Informer } from "../runtime/informer.ts";
import { pollUntil } from "../runtime/time.ts";
import type { Session } from "./sessions.ts";

export const CONFIG_MAP: ResourceType = {
  group: "",
  version: "v1",
  plural: "configmaps",
  kind: "ConfigMap",
  namespaced: true,
};
export const REVOKED_SESSIONS_LABEL = "stratus.io/revoked-sessions";
/** Sessions of the key issued at or before this time (ms) are revoked, whatever their id. */
const NOT_BEFORE = "notBefore";
/** Revoked ids kept per key; past it, every session of the key issued so far is revoked at once. */
export const MAX_REVOKED_PER_KEY = 64;

type RecordData = Readonly<Record<string, string>> | undefined;

interface RevocationRecord extends KubeObject {
  data?: Record<string, string>;
}

export function recordName(keySecret: string): string {
  return `stratus-sessions-${createHash("sha256").update(keySecret).digest("hex").slice(0, 20)}`;
}

/** Pure: whether a key's record revokes `session`. */
export function isRevokedBy(data: RecordData, session: Session): boolean {
  if (!data) return false;
  return session.issuedAt <= Number(data[NOT_BEFORE] ?? "0") || Object.hasOwn(data, session.id);
}

/**
 * Pure: the change to a key's record (a JSON merge patch of its data) that revokes `session` at
 * `now`: its id, valued with its expiry, added and the expired ids dropped. With
 * MAX_REVOKED_PER_KEY live ids already, the key's sessions issued until now are revoked together
 * instead and every id dropped, so a record stays small however often its user logs out.
 */
export function revocationPatch(
  data: RecordData,
  session: Session,
  now: number,
): Record<string, string | null> {
  const ids = Object.entries(data ?? {}).filter(([key]) => key !== NOT_BEFORE);
  const live = ids.filter(([, expiresAt]) => Number(expiresAt) > now);
  if (live.length >= MAX_REVOKED_PER_KEY)
    return { [NOT_BEFORE]: String(now), ...Object.fromEntries(ids.map(([id]) => [id, null])) };
  return {
    ...Object.fromEntries(ids.filter(([, expiresAt]) => Number(expiresAt) <= now).map(([id]) => [id, null])),
    [session.id]: String(session.expiresAt),
  };
}

export class SessionRevocations {
  private readonly records: Informer<RevocationRecord>;
  private readonly client: KubeClient;
  private readonly namespace: string;

  constructor(client: KubeClient, informers: InformerFactory, namespace: string) {
    this.client = client;
    this.namespace = namespace;
    this.records = informers.for<RevocationRecord>(CONFIG_MAP, {
      namespace,
      labelSelector: REVOKED_SESSIONS_LABEL,
    });
  }

  isRevoked(session: Session): boolean {
    return isRevokedBy(this.records.get(`${this.namespace}/${recordName(session.keySecret)}`)?.data, session);
  }

  /** Records the revocation (`keySecret`: the session's key Secret, the record's owner). */
  async revoke(session: Session, keySecret: KubeObject, now = Date.now()): Promise<void> {
    const name = recordName(session.keySecret);
    for (let attempt = 0; ; attempt++) {
      // A merge patch adds this id atomically, whoever else revokes at the same time.
      const patch = revocationPatch(this.records.get(`${this.namespace}/${name}`)?.data, session, now);
      try {
        await this.client.mergePatch(CONFIG_MAP, name, this.namespace, { data: patch });
        break;
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
      try {
        await this.client.create(CONFIG_MAP, this.newRecord(name, keySecret, patch));
        break;
      } catch (error) {
        // Another replica created it first: patch that one.
        if (!isAlreadyExists(error) || attempt >= 2) throw error;
      }
    }
    await pollUntil("the revocation to reach this replica's cache", () => this.isRevoked(session), {
      timeoutMs: 5000,
      intervalMs: 10,
    }).catch(() => undefined); // written: the watch will bring it
  }

  private newRecord(
    name: string,
    keySecret: KubeObject,
    patch: Record<string, string | null>,
  ): RevocationRecord {
    return {
      metadata: {
        name,
        namespace: this.namespace,
        labels: { [REVOKED_SESSIONS_LABEL]: "true" },
        ownerReferences: [
          {
            apiVersion: "v1",
            kind: "Secret",
            name: keySecret.metadata.name as string,
            uid: keySecret.metadata.uid as string,
          },
        ],
      },
      data: Object.fromEntries(
        Object.entries(patch).filter((entry): entry is [string, string] => entry[1] !== null),
      ),
    };
  }
}

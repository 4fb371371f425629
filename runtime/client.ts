// A small REST client for the Kubernetes API: JSON objects in and out (no model classes, so no
// field is lost), server-side apply, status subresource, streaming watches, one pooled
// connection per API server, and a metric per request. Credentials come from client-node's
// KubeConfig, so every kubeconfig and in-cluster form works.
import type { KubeConfig } from "@kubernetes/client-node";
import { Agent, fetch } from "undici";
import type { RuntimeMetrics } from "./metrics.ts";
import { sleep } from "./time.ts";

/** Where a kind lives in the API. */
export interface ResourceType {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

/** Kubernetes' own Namespaces (a Stratus account is one). */
export const NAMESPACE: ResourceType = {
  group: "",
  version: "v1",
  plural: "namespaces",
  kind: "Namespace",
  namespaced: false,
};

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
  managedFields?: {
    manager: string;
    operation?: string;
    subresource?: string;
    time?: string;
    fieldsV1?: unknown;
  }[];
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface ObjectList<T> {
  items: T[];
  metadata: { resourceVersion: string; continue?: string };
}

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

export interface Status {
  kind: "Status";
  status?: string;
  message?: string;
  reason?: string;
  code?: number;
  details?: unknown;
}

/** A request the API server answered with an error status. */
export class ApiError extends Error {
  override name = "ApiError";
  readonly status: number;
  readonly reason: string;
  readonly body: Status | undefined;
  constructor(status: number, message: string, body: Status | undefined) {
    super(message);
    this.status = status;
    this.reason = body?.reason ?? "";
    this.body = body;
  }
}

export const isNotFound = (error: unknown) => error instanceof ApiError && error.status === 404;
export const isConflict = (error: unknown) => error instanceof ApiError && error.status === 409;
export const isAlreadyExists = (error: unknown) =>
  isConflict(error) && (error as ApiError).reason === "AlreadyExists";

export function objectKey(object: KubeObject): string {
  const { namespace, name } = object.metadata;
  return namespace ? `${namespace}/${name}` : (name ?? "");
}

export function splitKey(key: string): { namespace: string | undefined; name: string } {
  const slash = key.indexOf("/");
  return slash < 0
    ? { namespace: undefined, name: key }
    : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

export function apiVersionOf(type: ResourceType): string {
  return type.group ? `${type.group}/${type.version}` : type.version;
}

export function resourcePath(
  type: ResourceType,
  options: { namespace?: string | undefined; name?: string; subresource?: string } = {},
): string {
  const base = type.group ? `/apis/${type.group}/${type.version}` : `/api/${type.version}`;
  const namespace =
    type.namespaced && options.namespace ? `/namespaces/${encodeURIComponent(options.namespace)}` : "";
  const name = options.name ? `/${encodeURIComponent(options.name)}` : "";
  const subresource = options.name && options.subresource ? `/${options.subresource}` : "";
  return `${base}${namespace}/${type.plural}${name}${subresource}`;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** For metrics: the verb (get, list, create, apply, ...) and resource. */
  verb: string;
  resource: string;
}

export interface ListOptions {
  namespace?: string | undefined;
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
  limit?: number;
  signal?: AbortSignal;
}

export interface ClientOptions {
  metrics?: RuntimeMetrics;
  userAgent?: string;
  /** Default timeout of a non-watch request. */
  timeoutMs?: number;
}

const APPLY_PATCH = "application/apply-patch+yaml";
const MERGE_PATCH = "application/merge-patch+json";

export class KubeClient {
  readonly kubeConfig: KubeConfig;
  private readonly metrics: RuntimeMetrics | undefined;
  private readonly userAgent: string;
  private readonly timeoutMs: number;
  /** Shared with the impersonating clients made from this one: one connection pool for all. */
  private readonly pool: { agent?: { agent: Agent; identity: string } | undefined };
  private readonly impersonation: Record<string, string>;

  constructor(kubeConfig: KubeConfig, options: ClientOptions = {}) {
    this.kubeConfig = kubeConfig;
    this.metrics = options.metrics;
    this.userAgent = options.userAgent ?? "stratus";
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.pool = {};
    this.impersonation = {};
  }

  /**
   * A client whose requests the API server authorizes as `user` in `groups` (Impersonate-User and
   * Impersonate-Group headers): RBAC decides what that user may do. It shares this client's pool.
   */
  impersonating(user: string, groups: readonly string[] = []): KubeClient {
    const client = Object.create(KubeClient.prototype) as KubeClient;
    Object.assign(client, this, {
      impersonation: { "impersonate-user": user },
      impersonatedGroups: [...groups],
    });
    return client;
  }

  private readonly impersonatedGroups: readonly string[] = [];

  get server(): string {
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error("the kubeconfig has no current cluster");
    return cluster.server.replace(/\/$/, "");
  }

  /**
   * Sends one request and returns the parsed JSON answer; non-2xx answers throw ApiError. A 503
   * Status from the API server itself is retried a few times: it answers so while a kind's schema
   * is being reloaded (the admission policies' "Resource kind ... not found. There can be a delay
   * ..."), and nothing was written.
   */
  async request<T>(method: string, path: string, options: RequestOptions): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const response = await this.send(method, path, options);
      const text = await response.text();
      if (response.status >= 200 && response.status < 300) return (text ? JSON.parse(text) : undefined) as T;
      const error = apiError(method, path, response.status, text);
      if (!isTransientUnavailable(error) || attempt >= UNAVAILABLE_RETRIES) throw error;
      await sleep(UNAVAILABLE_FIRST_DELAY_MS * 2 ** attempt, options.signal);
    }
  }

  list<T extends KubeObject>(
    type: ResourceType,
    options: ListOptions & { continueToken?: string } = {},
  ): Promise<ObjectList<T>> {
    return this.request("GET", resourcePath(type, { namespace: options.namespace }), {
      verb: "list",
      resource: type.plural,
      query: {
        labelSelector: options.labelSelector,
        fieldSelector: options.fieldSelector,
        limit: options.limit,
        continue: options.continueToken,
      },
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  /** Lists every page. */
  async listAll<T extends KubeObject>(type: ResourceType, options: ListOptions = {}): Promise<ObjectList<T>> {
    const items: T[] = [];
    let continueToken: string | undefined;
    let resourceVersion = "";
    do {
      const page = await this.list<T>(type, {
        limit: 500,
        ...options,
        ...(continueToken ? { continueToken } : {}),
      });
      items.push(...page.items);
      resourceVersion = page.metadata.resourceVersion;
      continueToken = page.metadata.continue || undefined;
    } while (continueToken);
    return { items, metadata: { resourceVersion } };
  }

  get<T extends KubeObject>(type: ResourceType, name: string, namespace?: string): Promise<T> {
    return this.request("GET", resourcePath(type, { namespace, name }), {
      verb: "get",
      resource: type.plural,
    });
  }

  create<T extends KubeObject>(type: ResourceType, object: T): Promise<T> {
    return this.request("POST", resourcePath(type, { namespace: object.metadata.namespace }), {
      verb: "create",
      resource: type.plural,
      body: { apiVersion: apiVersionOf(type), kind: type.kind, ...object },
    });
  }

  /** PUT with the object's resourceVersion: fails with 409 if someone else changed it meanwhile. */
  replace<T extends KubeObject>(type: ResourceType, object: T, subresource?: "status"): Promise<T> {
    const { namespace, name } = object.metadata;
    return this.request(
      "PUT",
      resourcePath(type, { namespace, name: name as string, ...(subresource ? { subresource } : {}) }),
      {
        verb: subresource ? `update-${subresource}` : "update",
        resource: type.plural,
        body: { apiVersion: apiVersionOf(type), kind: type.kind, ...object },
      },
    );
  }

  /**
   * Server-side apply: the object holds exactly the fields this field manager owns. Applying the
   * same intent twice changes nothing (no new resourceVersion), so reconcilers may apply freely.
   */
  apply<T extends KubeObject>(
    type: ResourceType,
    object: KubeObject & Record<string, unknown>,
    options: { fieldManager: string; force?: boolean; subresource?: "status" },
  ): Promise<T> {
    const { namespace, name } = object.metadata;
    if (!name) throw new Error(`apply ${type.kind}: the object has no name`);
    return this.request(
      "PATCH",
      resourcePath(type, {
        namespace,
        name,
        ...(options.subresource ? { subresource: options.subresource } : {}),
      }),
      {
        verb: options.subresource ? `apply-${options.subresource}` : "apply",
        resource: type.plural,
        query: { fieldManager: options.fieldManager, force: options.force ?? true },
        contentType: APPLY_PATCH,
        body: { apiVersion: apiVersionOf(type), kind: type.kind, ...object },
      },
    );
  }

  /** JSON merge patch (for metadata such as finalizers, guarded by a resourceVersion when given). */
  mergePatch<T extends KubeObject>(
    type: ResourceType,
    name: string,
    namespace: string | undefined,
    patch: unknown,
    subresource?: "status",
  ): Promise<T> {
    return this.request(
      "PATCH",
      resourcePath(type, { namespace, name, ...(subresource ? { subresource } : {}) }),
      {
        verb: subresource ? `patch-${subresource}` : "patch",
        resource: type.plural,
        contentType: MERGE_PATCH,
        body: patch,
      },
    );
  }

  async delete(
    type: ResourceType,
    name: string,
    namespace?: string,
    options: { propagationPolicy?: "Foreground" | "Background" | "Orphan"; uid?: string } = {},
  ): Promise<void> {
    await this.request("DELETE", resourcePath(type, { namespace, name }), {
      verb: "delete",
      resource: type.plural,
      body: {
        ...(options.propagationPolicy ? { propagationPolicy: options.propagationPolicy } : {}),
        ...(options.uid ? { preconditions: { uid: options.uid } } : {}),
      },
    });
  }

  /**
   * Streams a watch: `onEvent` for each event. Resolves when the server ends the watch, rejects
   * on a transport or HTTP error (410 Gone included), and ends quietly when `signal` aborts.
   */
  async watch<T>(
    type: ResourceType,
    options: ListOptions & { resourceVersion: string; timeoutSeconds: number; signal: AbortSignal },
    onEvent: (event: WatchEvent<T>) => void,
  ): Promise<void> {
    const path = resourcePath(type, { namespace: options.namespace });
    const response = await this.send("GET", path, {
      verb: "watch",
      resource: type.plural,
      signal: options.signal,
      timeoutMs: 0,
      query: {
        watch: true,
        allowWatchBookmarks: true,
        resourceVersion: options.resourceVersion,
        timeoutSeconds: options.timeoutSeconds,
        labelSelector: options.labelSelector,
        fieldSelector: options.fieldSelector,
      },
    });
    if (response.status !== 200)
      throw apiError("GET", `${path}?watch=true`, response.status, await response.text());
    if (!response.body) return;
    const decoder = new TextDecoder();
    let buffered = "";
    try {
      for await (const chunk of response.body) {
        buffered += decoder.decode(chunk as Uint8Array, { stream: true });
        let newline = buffered.indexOf("\n");
        while (newline >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line) onEvent(JSON.parse(line) as WatchEvent<T>);
          newline = buffered.indexOf("\n");
        }
      }
    } catch (error) {
      if (options.signal.aborted) return;
      throw error;
    }
  }

  /** Closes pooled connections. */
  async close(): Promise<void> {
    await this.pool.agent?.agent.close();
    this.pool.agent = undefined;
  }

  private async send(method: string, path: string, options: RequestOptions) {
    const url = new URL(this.server + path);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const tls: {
      ca?: unknown;
      cert?: unknown;
      key?: unknown;
      headers?: Record<string, string>;
      rejectUnauthorized?: boolean;
    } = {};
    await this.kubeConfig.applyToHTTPSOptions(tls as never);
    const dispatcher = this.dispatcherFor(tls);
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const signals = [options.signal, timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    const started = performance.now();
    const labels = { verb: options.verb, resource: options.resource };
    try {
      const response = await fetch(url, {
        method,
        dispatcher,
        headers: [
          ...Object.entries({
            ...tls.headers,
            ...this.impersonation,
          }),
          // One header per group: the API server reads every Impersonate-Group value.
          ...this.impersonatedGroups.map((group) => ["impersonate-group", group] as [string, string]),
          ["accept", "application/json"],
          ["user-agent", this.userAgent],
          ...(options.body !== undefined
            ? [["content-type", options.contentType ?? "application/json"] as [string, string]]
            : []),
        ],
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
      });
      this.metrics?.apiRequests.inc({ ...labels, code: String(response.status) });
      if (options.verb !== "watch")
        this.metrics?.apiRequestDuration.observe(labels, (performance.now() - started) / 1000);
      return response;
    } catch (error) {
      this.metrics?.apiRequests.inc({ ...labels, code: "0" });
      throw error;
    }
  }

  /** One keep-alive connection pool per credential set, instead of client-node's agent per request. */
  private dispatcherFor(tls: {
    ca?: unknown;
    cert?: unknown;
    key?: unknown;
    rejectUnauthorized?: boolean;
  }): Agent {
    const identity = `${String(tls.ca)}|${String(tls.cert)}|${String(tls.key)}|${tls.rejectUnauthorized}`;
    if (this.pool.agent?.identity !== identity) {
      const previous = this.pool.agent?.agent;
      this.pool.agent = {
        identity,
        agent: new Agent({
          connect: {
            ca: tls.ca as string,
            cert: tls.cert as string,
            key: tls.key as string,
            ...(tls.rejectUnauthorized === false ? { rejectUnauthorized: false } : {}),
          },
          keepAliveTimeout: 30_000,
          // HTTP/1.1 watches hold a connection each; allow plenty beside the short requests.
          connections: 64,
        }),
      };
      void previous?.close();
    }
    return this.pool.agent.agent;
  }
}

/** 0.2 + 0.4 + ... + 3.2 s: past the 5 s after which the API server re-reads changed schemas. */
const UNAVAILABLE_RETRIES = 5;
const UNAVAILABLE_FIRST_DELAY_MS = 200;

/** The API server's own "try again" (a Status object); an aggregated API's 503 is plain text. */
function isTransientUnavailable(error: ApiError): boolean {
  return error.status === 503 && error.body?.kind === "Status" && error.body.reason === "ServiceUnavailable";
}

function apiError(method: string, path: string, status: number, text: string): ApiError {
  let body: Status | undefined;
  try {
    body = JSON.parse(text) as Status;
  } catch {
    body = undefined;
  }
  return new ApiError(status, `${method} ${path}: ${status} ${body?.message ?? text.slice(0, 200)}`, body);
}

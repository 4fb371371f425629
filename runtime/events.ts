// Kubernetes Events (events.k8s.io/v1) about the objects a component works on, so
// `kubectl describe` and `kubectl events` show what happened. Repeats of the same event within
// a few minutes are dropped rather than flooding the API server.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { apiVersionOf, type KubeClient, type KubeObject, type ResourceType } from "./client.ts";
import { kubeMicroTime } from "./time.ts";

export const EVENT: ResourceType = {
  group: "events.k8s.io",
  version: "v1",
  plural: "events",
  kind: "Event",
  namespaced: true,
};

const REPEAT_WINDOW_MS = 5 * 60_000;

export class EventRecorder {
  private readonly client: KubeClient;
  private readonly controller: string;
  private readonly instance: string;
  private readonly logger: Logger | undefined;
  private readonly recent = new Map<string, number>();

  /** `controller` is e.g. stratus.io/fabric; `instance` names this process. */
  constructor(client: KubeClient, controller: string, instance: string, logger?: Logger) {
    this.client = client;
    this.controller = controller;
    this.instance = instance;
    this.logger = logger;
  }

  /** Records an event; never throws (an event is worth less than the work it reports). */
  async record(
    type: ResourceType,
    object: KubeObject,
    event: { type: "Normal" | "Warning"; reason: string; action: string; note: string },
  ): Promise<void> {
    const { name, namespace, uid, resourceVersion } = object.metadata;
    const fingerprint = `${type.plural}/${namespace}/${name}/${event.type}/${event.reason}/${event.note}`;
    const now = Date.now();
    if ((this.recent.get(fingerprint) ?? 0) > now - REPEAT_WINDOW_MS) return;
    this.recent.set(fingerprint, now);
    if (this.recent.size > 10_000) this.forgetOld(now);
    try {
      await this.client.create(EVENT, {
        metadata: { name: `${name}.${randomBytes(8).toString("hex")}`, namespace: namespace ?? "default" },
        eventTime: kubeMicroTime(),
        reportingController: this.controller,
        reportingInstance: this.instance,
        type: event.type,
        reason: event.reason,
        action: event.action,
        note: event.note.slice(0, 1024),
        regarding: { apiVersion: apiVersionOf(type), kind: type.kind, name, namespace, uid, resourceVersion },
      } as KubeObject);
    } catch (error) {
      this.logger?.warn({ err: String(error), reason: event.reason }, "could not record an event");
    }
  }

  private forgetOld(now: number): void {
    for (const [fingerprint, at] of this.recent)
      if (at <= now - REPEAT_WINDOW_MS) this.recent.delete(fingerprint);
  }
}

// What the operator process runs: components (fabric, compute, ...), each a set of controllers
// over shared informers, each behind its own leader election so it can scale on its own.
import type { Logger } from "pino";
import type { KubeClient, KubeObject, ResourceType } from "./client.ts";
import type { Controller } from "./controller.ts";
import type { EventRecorder } from "./events.ts";
import { Informer, type InformerOptions } from "./informer.ts";
import type { RuntimeMetrics } from "./metrics.ts";

export interface ComponentContext {
  client: KubeClient;
  informers: InformerFactory;
  metrics: RuntimeMetrics;
  logger: Logger;
  events: EventRecorder;
  /** The field manager for every write of this component: stratus-operator/<component>. */
  fieldManager: string;
}

export interface Component {
  name: string;
  description: string;
  setup(context: ComponentContext): Controller[];
}

/** Shares one informer per resource (and selectors) among the components of a process. */
export class InformerFactory {
  private readonly client: KubeClient;
  private readonly defaults: InformerOptions<KubeObject>;
  private readonly informers = new Map<string, Informer<KubeObject>>();

  constructor(client: KubeClient, defaults: InformerOptions<KubeObject> = {}) {
    this.client = client;
    this.defaults = defaults;
  }

  /** The informer for `type`; indexers of several callers are merged. */
  for<T extends KubeObject>(type: ResourceType, options: InformerOptions<T> = {}): Informer<T> {
    const key = [
      type.group,
      type.plural,
      options.namespace,
      options.labelSelector,
      options.fieldSelector,
    ].join("|");
    let informer = this.informers.get(key) as Informer<T> | undefined;
    if (!informer) {
      informer = new Informer<T>(this.client, type, { ...(this.defaults as InformerOptions<T>), ...options });
      this.informers.set(key, informer as unknown as Informer<KubeObject>);
    } else if (options.indexers) {
      informer.addIndexers(options.indexers);
    }
    return informer;
  }

  all(): Informer<KubeObject>[] {
    return [...this.informers.values()];
  }

  start(): void {
    for (const informer of this.informers.values()) informer.start();
  }

  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
  }

  async waitForSync(): Promise<void> {
    await Promise.all([...this.informers.values()].map((i) => i.waitForSync()));
  }

  /** Names of informers not synced yet, for readiness. */
  unsynced(): string[] {
    return [...this.informers.values()].filter((i) => !i.hasSynced()).map((i) => i.type.plural);
  }
}

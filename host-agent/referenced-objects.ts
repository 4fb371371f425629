// Watches exactly the objects this host's VMs reference, one small watch per object, the way the
// kubelet watches only the Secrets and ConfigMaps of its own pods: an agent's watch traffic
// depends on what runs on its host, never on the size of the cluster.
import type { KubeClient, KubeObject, ResourceType } from "../runtime/client.ts";
import { Informer, type InformerOptions } from "../runtime/informer.ts";

export class ReferencedObjects<T extends KubeObject> {
  private readonly client: KubeClient;
  private readonly type: ResourceType;
  private readonly options: InformerOptions<T>;
  private readonly watches = new Map<string, Informer<T>>();
  private readonly onChange: (object: T) => void;

  constructor(
    client: KubeClient,
    type: ResourceType,
    options: InformerOptions<T>,
    onChange: (object: T) => void,
  ) {
    this.client = client;
    this.type = type;
    this.options = options;
    this.onChange = onChange;
  }

  /** The object namespace/name, watched from now on; waits for its first list. */
  async get(namespace: string, name: string): Promise<T | undefined> {
    const key = `${namespace}/${name}`;
    let informer = this.watches.get(key);
    if (!informer) {
      informer = new Informer<T>(this.client, this.type, {
        ...this.options,
        namespace,
        fieldSelector: `metadata.name=${name}`,
      });
      informer.addHandlers({
        onAdd: this.onChange,
        onUpdate: (_, o) => this.onChange(o),
        onDelete: this.onChange,
      });
      this.watches.set(key, informer);
      informer.start();
    }
    await informer.waitForSync();
    return informer.get(key);
  }

  /** Stops watching objects no longer referenced. */
  async retain(referenced: ReadonlySet<string>): Promise<void> {
    for (const [key, informer] of this.watches) {
      if (referenced.has(key)) continue;
      this.watches.delete(key);
      await informer.stop();
    }
  }

  get size(): number {
    return this.watches.size;
  }

  async stop(): Promise<void> {
    await this.retain(new Set());
  }
}
